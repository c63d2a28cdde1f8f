/**
 * Fault: the cloud takes the host away, and says so first. A real worker
 * on RabbitMQ runs jobs in the fakes' VMs while the host's metadata service
 * (a fake IMDSv2, a fake GCE metadata server) gives a notice:
 *
 * - scale-in with jobs running (ASG lifecycle hook): no job lost, heartbeats
 *   while the jobs finish, the hook completed only after the last one settled;
 * - spot interruption with jobs that never end: every job requeued before
 *   the deadline, its VM destroyed, the worker gone before the deadline;
 *   another host then runs them to the end;
 * - GCE preemption of the host: the same;
 * - a metadata service (EC2's, GCE's) that fails or answers garbage: no drain.
 *
 * Read from the broker (the ledger) and from the fakes' records.
 */
import { EventEmitter, once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { WorkerState } from '../../src/lifecycle/state.js';
import type { Worker } from '../../src/worker.js';
import { FakeAutoScaling, type FakeAutoScalingCall } from '../fakes/autoscaling-server.js';
import { FakeEc2 } from '../fakes/ec2-server.js';
import { ec2Env, registerDefaultImage } from '../fakes/ec2-settings.js';
import { FakeGceMetadata, type GceMetadataRequest } from '../fakes/gce-metadata-server.js';
import { FakeGce } from '../fakes/gce-server.js';
import { gceEnv, travisImages } from '../fakes/gce-settings.js';
import { FakeImds, type ImdsRequest } from '../fakes/imds-server.js';
import { useAmqpWorker } from '../helpers/amqp-worker.js';
import { startBuildApi, type FakeBuildApi } from '../helpers/build-api.js';
import { ENDLESS_SCRIPT, FINISHING_SCRIPT, faultPayload } from '../helpers/fault-jobs.js';
import { startLedger, type JobLedger } from '../helpers/job-ledger.js';
import { setProcessEnv } from '../helpers/process-env.js';
import { publishRaw } from '../helpers/rabbitmq.js';

const QUEUE = 'builds.host-notices';
const CONTROL_AUTH = 'ops:notices';
const amqp = useAmqpWorker(QUEUE);
/** The build script every job gets, switched between scenarios and hosts. */
let script = (): string => FINISHING_SCRIPT;
let buildApi: FakeBuildApi;
let ledger: JobLedger | undefined;
let ec2: FakeEc2;
let imds: FakeImds;
let autoScaling: FakeAutoScaling;
let gce: FakeGce;
let gceMetadata: FakeGceMetadata;
let restoreEnv: () => void;
let dir: string;

beforeAll(async () => {
  buildApi = await startBuildApi('token', () => script());
  ec2 = await FakeEc2.start();
  registerDefaultImage(ec2);
  autoScaling = await FakeAutoScaling.start();
  imds = await FakeImds.start({ credentials: autoScaling });
  gce = await FakeGce.start({ images: travisImages() });
  gceMetadata = await FakeGceMetadata.start();
  // The variables the SDKs (and Google's libraries) read themselves.
  restoreEnv = setProcessEnv({
    AWS_EC2_METADATA_SERVICE_ENDPOINT: imds.endpoint,
    AWS_ENDPOINT_URL_AUTO_SCALING: autoScaling.endpoint,
    GCE_METADATA_HOST: gceMetadata.host,
  });
  dir = await mkdtemp(join(tmpdir(), 'mayfly-host-notices-'));
});
afterEach(async () => {
  await ledger?.close();
  ledger = undefined;
});
afterAll(async () => {
  restoreEnv?.();
  buildApi?.close();
  await Promise.all([ec2?.close(), imds?.close(), autoScaling?.close(), gce?.close(), gceMetadata?.close()]);
  if (dir) await rm(dir, { recursive: true, force: true });
});

const publishJob = (jobId: number): Promise<void> => publishRaw(amqp.vhost.uri, '', QUEUE, faultPayload(QUEUE, jobId));

/** Each job's states, in order. */
const statesOf = (jobIds: number[]): string[][] => jobIds.map((id) => ledger?.states(id) ?? []);

async function untilState(worker: Worker, state: WorkerState, signal: AbortSignal): Promise<void> {
  while (worker.state !== state) await once(worker.events, 'state', { signal });
}

/** Resolves once the fake has answered `count` calls of `action` with 200. */
function untilCalls(action: FakeAutoScalingCall['action'], count: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const check = (): void => {
      if (autoScaling.calls.filter((call) => call.action === action && call.status === 200).length < count) return;
      autoScaling.off('call', check);
      resolve();
    };
    autoScaling.on('call', check);
    signal.addEventListener('abort', () => reject(new Error(`fewer than ${count} ${action} calls`)), { once: true });
    check();
  });
}

/** Start jobs that run until killed, on a worker configured by `env`, and wait until each has logged. */
async function startEndlessJobs(env: Record<string, string>, jobIds: number[], signal: AbortSignal): Promise<Worker> {
  script = () => ENDLESS_SCRIPT;
  ledger = await startLedger(amqp.vhost.uri, { onReset: publishJob });
  const { worker } = await amqp.start({ ...env, TRAVIS_WORKER_BUILD_API_URI: buildApi.uri, TRAVIS_WORKER_POOL_SIZE: String(jobIds.length) });
  for (const jobId of jobIds) await publishJob(jobId);
  for (const jobId of jobIds) await ledger.untilLogged(jobId, 'line 1', signal);
  return worker;
}

/** Another host, with nothing to hear from its cloud, runs the requeued jobs to the end. */
async function finishOnAnotherHost(env: Record<string, string>, jobIds: number[], signal: AbortSignal): Promise<void> {
  script = () => FINISHING_SCRIPT;
  const successor = await amqp.start({ ...env, TRAVIS_WORKER_HOSTNAME: 'another-host', TRAVIS_WORKER_BUILD_API_URI: buildApi.uri, TRAVIS_WORKER_POOL_SIZE: '2' });
  await ledger?.untilFinished(jobIds, signal);
  await successor.stop();
}

interface NoticeScenario {
  /** The worker's settings, less its cloud's: another host runs the requeued jobs with them. */
  env: Record<string, string>;
  jobIds: number[];
  /** The notice's deadline, ms since the epoch. */
  deadline: number;
  /** The job instances the fake cloud still has. */
  liveVms: () => unknown[];
  scenario: string;
}

/**
 * After a notice: the worker is gone before the deadline with no job
 * instance left, every job was requeued before the deadline (as the ledger
 * read it from the broker), and another host runs them to the end.
 */
async function expectRequeuedBeforeDeadline(worker: Worker, { env, jobIds, deadline, liveVms, scenario }: NoticeScenario, signal: AbortSignal): Promise<void> {
  await worker.stopped;
  const goneAt = Date.now();
  expect(liveVms()).toEqual([]);
  expect(goneAt).toBeLessThan(deadline);

  await finishOnAnotherHost(env, jobIds, signal);
  expect(statesOf(jobIds)).toEqual(jobIds.map(() => ['received', 'started', 'reset', 'received', 'started', 'passed']));
  const report = ledger?.report(scenario, jobIds, { vmsLeaked: liveVms().length, deadline });
  expect(report?.problems).toEqual([]);
  expect(report?.requeuedBeforeDeadline).toBe(jobIds.length);
}

describe('fault: EC2 Auto Scaling scales the host in while jobs run', () => {
  it('drains with heartbeats, loses no job, and completes the lifecycle hook only after the last job settled', async () => {
    const signal = AbortSignal.timeout(40_000);
    const jobIds = [7501, 7502];
    autoScaling.addGroup('mayfly-fleet', ['mayfly-drain']);
    autoScaling.addInstance('mayfly-fleet', imds.instanceId);
    const flag = join(dir, 'scale-in-jobs-may-end');
    script = () => `while [ ! -e ${flag} ]; do echo waiting; sleep 0.05; done; echo finished`;
    ledger = await startLedger(amqp.vhost.uri);
    const { worker } = await amqp.start({
      ...ec2Env(ec2),
      TRAVIS_WORKER_HOSTNAME: 'scale-in-host',
      TRAVIS_WORKER_BUILD_API_URI: buildApi.uri,
      TRAVIS_WORKER_POOL_SIZE: '2',
      TRAVIS_WORKER_HOST_CLOUD: 'aws',
      TRAVIS_WORKER_HOST_NOTICE_POLL_INTERVAL: '50ms',
      TRAVIS_WORKER_ASG_LIFECYCLE_HOOK: 'mayfly-drain',
      TRAVIS_WORKER_ASG_LIFECYCLE_HEARTBEAT_INTERVAL: '50ms',
      TRAVIS_WORKER_REMOTE_CONTROLLER_ADDR: '127.0.0.1:0',
      TRAVIS_WORKER_REMOTE_CONTROLLER_AUTH: CONTROL_AUTH,
    });
    const settledAt: number[] = [];
    worker.events.on('job-done', () => settledAt.push(Date.now()));
    for (const jobId of jobIds) await publishJob(jobId);
    for (const jobId of jobIds) await ledger.untilLogged(jobId, 'waiting', signal);

    autoScaling.scaleIn(imds.instanceId);
    imds.setTargetLifecycleState('Terminated');
    await untilState(worker, 'DRAINING', signal);
    // The jobs go on; the group hears from the host meanwhile.
    await untilCalls('RecordLifecycleActionHeartbeat', 2, signal);
    expect(autoScaling.callsOf('CompleteLifecycleAction')).toEqual([]);
    const metrics = await fetch(`${worker.controlUrl}/metrics`, { headers: { authorization: `Basic ${Buffer.from(CONTROL_AUTH).toString('base64')}` } });
    expect(await metrics.text()).toMatch(/^mayfly_host_notices_total\{[^}]*kind="scale-in"[^}]*\} 1$/m);
    await writeFile(flag, '');
    await worker.stopped;
    await ledger.untilFinished(jobIds, signal);

    expect(statesOf(jobIds)).toEqual(jobIds.map(() => ['received', 'started', 'passed']));
    const lastSettled = Math.max(...settledAt);
    expect(settledAt).toHaveLength(jobIds.length);
    const [complete, ...more] = autoScaling.callsOf('CompleteLifecycleAction');
    expect(more).toEqual([]);
    expect(complete).toMatchObject({
      status: 200,
      params: { AutoScalingGroupName: 'mayfly-fleet', LifecycleHookName: 'mayfly-drain', InstanceId: imds.instanceId, LifecycleActionResult: 'CONTINUE' },
    });
    expect(complete?.at).toBeGreaterThanOrEqual(lastSettled);
    const heartbeats = autoScaling.callsOf('RecordLifecycleActionHeartbeat');
    expect(heartbeats.filter((call) => call.status === 200 && call.at <= lastSettled).length).toBeGreaterThanOrEqual(2);
    expect(autoScaling.instances.get(imds.instanceId)).toMatchObject({ lifecycleState: 'Terminating:Proceed', result: 'CONTINUE' });
    const report = ledger.report('ASG scale-in with jobs running (lifecycle hook)', jobIds, { vmsLeaked: ec2.live().length });
    expect(report.problems).toEqual([]);
  });
});

describe('fault: EC2 interrupts the spot host running jobs that never end', () => {
  it('requeues every job and destroys its VM before the deadline, and is gone before it', async () => {
    const signal = AbortSignal.timeout(40_000);
    const jobIds = [7511, 7512];
    imds.setTargetLifecycleState('InService');
    // Jobs get what the notice leaves less 9 s: at most a second, so the test is quick.
    const env = { ...ec2Env(ec2), TRAVIS_WORKER_HOSTNAME: 'spot-host' };
    const worker = await startEndlessJobs(
      { ...env, TRAVIS_WORKER_HOST_CLOUD: 'aws', TRAVIS_WORKER_HOST_NOTICE_POLL_INTERVAL: '50ms', TRAVIS_WORKER_HOST_NOTICE_MARGIN: '9s' },
      jobIds,
      signal,
    );

    // The notice's time has whole seconds, as EC2 writes it.
    const deadline = Math.floor(Date.now() / 1000) * 1000 + 10_000;
    imds.noticeSpot(new Date(deadline));
    await expectRequeuedBeforeDeadline(worker, { env, jobIds, deadline, liveVms: () => ec2.live(), scenario: 'EC2 spot interruption notice, jobs longer than the notice' }, signal);
  });
});

describe('fault: GCE preempts the host running jobs that never end', () => {
  it('requeues every job and deletes its VM within the 30 s notice, and is gone before it ends', async () => {
    const signal = AbortSignal.timeout(40_000);
    const jobIds = [7521, 7522];
    // GCE gives 30 s; a margin of 29 s leaves the jobs at most one.
    const env = { ...gceEnv(gce), TRAVIS_WORKER_HOSTNAME: 'preempted-host' };
    const worker = await startEndlessJobs({ ...env, TRAVIS_WORKER_HOST_CLOUD: 'gce', TRAVIS_WORKER_HOST_NOTICE_MARGIN: '29s' }, jobIds, signal);

    // The deadline counts from when the worker heard the notice, which is after now: this one is no later.
    const deadline = Date.now() + 30_000;
    gceMetadata.preempt();
    await expectRequeuedBeforeDeadline(worker, { env, jobIds, deadline, liveVms: () => gce.liveInstances(), scenario: 'GCE preemption of the host, jobs longer than the notice' }, signal);
  });
});

/** Resolves once `fake` has answered `count` more requests. */
function answered<T extends { status: number }>(fake: EventEmitter<{ request: [T] }>, count: number): Promise<void> {
  return new Promise((resolve) => {
    let seen = 0;
    const listener = (request: T): void => {
      if (request.status === 0 || ++seen < count) return;
      fake.off('request', listener);
      resolve();
    };
    fake.on('request', listener);
  });
}

interface GarbledMetadata {
  scenario: string;
  /** The worker's settings: its backend and its cloud. */
  env: Record<string, string>;
  jobIds: number[];
  /** Each way the metadata service misbehaves in turn; resolves once the worker has read it a few times. */
  phases: (() => Promise<void>)[];
  liveVms: () => unknown[];
}

/** While the metadata service fails and garbles, the worker keeps taking jobs and finishing them: it never drains. */
async function expectNoDrain({ scenario, env, jobIds, phases, liveVms }: GarbledMetadata): Promise<void> {
  const signal = AbortSignal.timeout(40_000);
  const [first, second] = jobIds as [number, number];
  script = () => FINISHING_SCRIPT;
  ledger = await startLedger(amqp.vhost.uri);
  const running = await amqp.start({ ...env, TRAVIS_WORKER_BUILD_API_URI: buildApi.uri, TRAVIS_WORKER_HOST_NOTICE_POLL_INTERVAL: '20ms' });
  const { worker } = running;
  await publishJob(first);
  for (const phase of phases) await phase();
  await ledger.untilFinished([first], signal);
  // Still taking jobs.
  await publishJob(second);
  await ledger.untilFinished(jobIds, signal);
  expect(worker.state).toBe('RUNNING');
  expect(statesOf(jobIds)).toEqual(jobIds.map(() => ['received', 'started', 'passed']));
  // A job's VM goes after its terminal state is out: counted once the worker has stopped.
  await running.stop();
  const report = ledger.report(scenario, jobIds, { vmsLeaked: liveVms().length });
  expect(report.problems).toEqual([]);
}

describe('fault: the metadata service fails and answers garbage', () => {
  it('never drains the worker on EC2: garbage in front of IMDS (even the token is a web page), 500s, then garbled notices', async () => {
    const completions = autoScaling.callsOf('CompleteLifecycleAction').length;
    imds.mode = 'garbage';
    try {
      await expectNoDrain({
        scenario: 'EC2 instance metadata fails and answers garbage',
        env: { ...ec2Env(ec2), TRAVIS_WORKER_HOSTNAME: 'garbled-imds-host', TRAVIS_WORKER_HOST_CLOUD: 'aws', TRAVIS_WORKER_ASG_LIFECYCLE_HOOK: 'mayfly-drain' },
        jobIds: [7531, 7532],
        phases: [
          () => answered<ImdsRequest>(imds, 10),
          async () => {
            imds.mode = 'error';
            await answered<ImdsRequest>(imds, 10);
          },
          async () => {
            // Answers at the notices' paths that are not what EC2 sends.
            imds.mode = 'ok';
            imds.set('spot/instance-action', '{"action":"terminate","time":"in two minutes"}');
            imds.setTargetLifecycleState('<html><body>Terminated</body></html>');
            imds.set('events/recommendations/rebalance', '{"noticeTime":');
            await answered<ImdsRequest>(imds, 10);
          },
        ],
        liveVms: () => ec2.live(),
      });
      expect(autoScaling.callsOf('CompleteLifecycleAction')).toHaveLength(completions);
    } finally {
      imds.mode = 'ok';
      imds.set('spot/instance-action', undefined);
      imds.setTargetLifecycleState('InService');
      imds.set('events/recommendations/rebalance', undefined);
    }
  });

  it("never drains the worker on GCE: 500s, answers without the metadata server's flavor, then values GCE never sends", async () => {
    gceMetadata.set('instance/preempted', 'FALSE');
    gceMetadata.maintenance('NONE');
    gceMetadata.mode = 'error';
    try {
      await expectNoDrain({
        scenario: 'GCE metadata server fails and answers garbage',
        env: { ...gceEnv(gce), TRAVIS_WORKER_HOSTNAME: 'garbled-metadata-host', TRAVIS_WORKER_HOST_CLOUD: 'gce' },
        jobIds: [7541, 7542],
        phases: [
          () => answered<GceMetadataRequest>(gceMetadata, 6),
          async () => {
            gceMetadata.mode = 'garbage';
            await answered<GceMetadataRequest>(gceMetadata, 6);
          },
          async () => {
            gceMetadata.mode = 'ok';
            gceMetadata.set('instance/preempted', 'MAYBE');
            gceMetadata.maintenance('<html>TERMINATE_ON_HOST_MAINTENANCE</html>');
            await answered<GceMetadataRequest>(gceMetadata, 6);
          },
        ],
        liveVms: () => gce.liveInstances(),
      });
    } finally {
      gceMetadata.mode = 'ok';
    }
  });
});
