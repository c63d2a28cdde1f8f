/**
 * Fault: the host ends its own life in an autoscaled group, and no job may
 * pay for it. With TRAVIS_WORKER_MAX_JOBS the worker takes exactly that
 * many jobs (the rest stay in the queue, never delivered here) and leaves
 * its GCE managed instance group; with TRAVIS_WORKER_IDLE_SHUTDOWN_AFTER it
 * drains once idle and leaves its EC2 Auto Scaling group (completing the
 * group's termination hook for itself), and jobs
 * published the moment the idle timer fires are run, here or by the next
 * worker, never lost. The host leaves its group only once no job runs and
 * no job VM is left. Read from the broker (the ledger, the queue's count)
 * and from the fakes' records.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FakeAutoScalingCall } from '../fakes/autoscaling-server.js';
import { FakeGce } from '../fakes/gce-server.js';
import { gceEnv, placeManagedHost, travisImages } from '../fakes/gce-settings.js';
import { useAwsHost } from '../helpers/aws-host.js';
import { useFaultWorker } from '../helpers/fault-worker.js';
import { setProcessEnv } from '../helpers/process-env.js';
import { listConsumers, messageCount } from '../helpers/rabbitmq.js';

const QUEUE = 'builds.host-lifetime';
const fault = useFaultWorker(QUEUE);
const { amqp, publishJob } = fault;

describe('fault: MAX_JOBS on a host in a GCE managed instance group', () => {
  const ZONE = 'us-central1-b';
  let fake: FakeGce;
  let restoreEnv: () => void;

  beforeAll(async () => {
    fake = await FakeGce.start({ images: travisImages() });
    placeManagedHost(fake, ZONE, 'mayfly-host-1');
    restoreEnv = setProcessEnv({ GCE_METADATA_HOST: fake.host });
  });
  afterAll(async () => {
    restoreEnv?.();
    await fake?.close();
  });

  it('takes exactly MAX_JOBS jobs with more processors than that, leaves the rest queued, and leaves its group once they settled and their VMs are gone', async () => {
    const group = fake.addManagedGroup(ZONE, 'mayfly-fleet', 3);
    const ledger = await fault.startLedger();
    const jobIds = [7401, 7402, 7403, 7404, 7405];
    const { worker } = await amqp.start({
      ...gceEnv(fake),
      TRAVIS_WORKER_HOSTNAME: 'lifetime-gce-worker',
      TRAVIS_WORKER_BUILD_API_URI: fault.buildApiUri,
      TRAVIS_WORKER_POOL_SIZE: '4',
      TRAVIS_WORKER_MAX_JOBS: '3',
      TRAVIS_WORKER_HOST_CLOUD: 'gce',
      TRAVIS_WORKER_HOST_TERMINATE: 'true',
      TRAVIS_WORKER_HOST_GCE_API_ENDPOINT: fake.endpoint,
    });
    // Four processors, three jobs to take: only three consumers ever open, so no fourth job can be offered here.
    const consumers = await listConsumers(amqp.vhost.name);
    expect(consumers.filter((consumer) => consumer.queue_name === QUEUE)).toHaveLength(3);
    for (const jobId of jobIds) await publishJob(jobId);
    await worker.stopped;
    await ledger.settled(AbortSignal.timeout(10_000));

    const taken = jobIds.filter((id) => ledger.states(id).length !== 0);
    expect(taken).toHaveLength(3);
    expect(taken.map((id) => ledger.states(id))).toEqual(taken.map(() => ['received', 'started', 'passed']));
    // Never delivered here: still ready in the queue for another worker.
    expect(await messageCount(amqp.vhost.uri, QUEUE)).toBe(2);
    expect(group.deletions).toEqual([{ instances: [`zones/${ZONE}/instances/mayfly-host-1`], at: expect.any(Number), liveJobVms: 0 }]);
    expect(group.targetSize).toBe(2);

    const report = ledger.report('max jobs reached: the host leaves its MIG', taken, { vmsLeaked: fake.liveInstances().length });
    expect(report.problems).toEqual([]);
    expect(report).toMatchObject({ jobsRun: 3, jobsLost: 0, partsLost: 0, duplicateTerminalStates: 0, vmsLeaked: 0 });
  });
});

describe('fault: IDLE_SHUTDOWN_AFTER on a host in an EC2 Auto Scaling group', () => {
  const host = useAwsHost();

  it('drains once idle and leaves its group with no job running; jobs published as the idle timer fires are run, here or by the next worker', async () => {
    const { autoScaling, imds } = host;
    // Its termination hook holds a self-terminated instance too, until the host completes the action.
    autoScaling.addGroup('mayfly-fleet', ['mayfly-drain']);
    autoScaling.addInstance('mayfly-fleet', imds.instanceId);
    const started = await fault.startLedger();
    const env = { TRAVIS_WORKER_PROVIDER_NAME: 'local', TRAVIS_WORKER_BUILD_API_URI: fault.buildApiUri, TRAVIS_WORKER_POOL_SIZE: '2' };
    const first = await amqp.start({
      ...env,
      TRAVIS_WORKER_HOSTNAME: 'lifetime-aws-worker',
      TRAVIS_WORKER_IDLE_SHUTDOWN_AFTER: '300ms',
      TRAVIS_WORKER_HOST_CLOUD: 'aws',
      TRAVIS_WORKER_HOST_TERMINATE: 'true',
      TRAVIS_WORKER_ASG_LIFECYCLE_HOOK: 'mayfly-drain',
    });
    const worker = first.worker;
    await publishJob(7501);
    await started.untilFinished([7501], AbortSignal.timeout(15_000));

    // The moment the idle timer drains the worker, while its consumers are still open: publish more.
    const atDeadline = [7502, 7503, 7504, 7505];
    const published = new Promise<void>((resolve, reject) => {
      worker.events.on('state', (to) => {
        if (to === 'DRAINING') Promise.all(atDeadline.map(publishJob)).then(() => resolve(), reject);
      });
    });
    const busyAtTermination: number[] = [];
    autoScaling.on('call', (call: FakeAutoScalingCall) => {
      if (call.action === 'TerminateInstanceInAutoScalingGroup') busyAtTermination.push(worker.pool.counts().busy);
    });
    await worker.stopped;
    await published;

    const terminations = autoScaling.callsOf('TerminateInstanceInAutoScalingGroup');
    expect(terminations).toEqual([
      expect.objectContaining({ status: 200, params: expect.objectContaining({ InstanceId: imds.instanceId, ShouldDecrementDesiredCapacity: 'true' }) }),
    ]);
    expect(busyAtTermination).toEqual([0]);
    expect(autoScaling.desiredCapacity.get('mayfly-fleet')).toBe(0);
    expect(autoScaling.callsOf('CompleteLifecycleAction')).toEqual([
      expect.objectContaining({ status: 200, params: expect.objectContaining({ LifecycleHookName: 'mayfly-drain', LifecycleActionResult: 'CONTINUE' }) }),
    ]);
    expect(autoScaling.instances.get(imds.instanceId)?.lifecycleState).toBe('Terminating:Proceed');

    // Whatever the draining worker did not run went back to the queue: the next worker runs it.
    await amqp.start({ ...env, TRAVIS_WORKER_HOSTNAME: 'lifetime-next-worker' });
    const jobIds = [7501, ...atDeadline];
    await started.untilFinished(jobIds, AbortSignal.timeout(20_000));
    expect(jobIds.map((id) => started.states(id).at(-1))).toEqual(jobIds.map(() => 'passed'));
    const report = started.report('idle shutdown: jobs published at the idle deadline, the host leaves its ASG', jobIds);
    expect(report.problems).toEqual([]);
    expect(report).toMatchObject({ jobsRun: 5, jobsLost: 0, partsLost: 0, duplicateTerminalStates: 0 });
  });
});
