/**
 * Fault: the VM's sshd dies while the script prints (the machine crashed or
 * lost its network; the cloud API still says it runs). The run is requeued
 * (`reset`), the hub puts the job back, and the worker runs it again on a
 * fresh VM to the end. Read from the broker: one terminal state, the
 * finishing run's log complete; from the fake EC2: no VM left.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { TAG_JOB_ID } from '../../backends/ec2/tags.js';
import { FakeEc2, type FakeEc2Instance } from '../fakes/ec2-server.js';
import { ec2Env, registerDefaultImage } from '../fakes/ec2-settings.js';
import { useAmqpWorker } from '../helpers/amqp-worker.js';
import { startBuildApi, type FakeBuildApi } from '../helpers/build-api.js';
import { ENDLESS_SCRIPT, FINISHING_LAST_LINE, FINISHING_SCRIPT, faultPayload } from '../helpers/fault-jobs.js';
import { startLedger, type JobLedger } from '../helpers/job-ledger.js';
import { publishRaw } from '../helpers/rabbitmq.js';

const QUEUE = 'builds.ec2';

describe('fault: sshd killed mid-script (ec2)', () => {
  const amqp = useAmqpWorker(QUEUE);
  let fake: FakeEc2;
  let buildApi: FakeBuildApi;
  let ledger: JobLedger | undefined;

  beforeAll(async () => {
    fake = await FakeEc2.start({ bootDelayMs: 20 });
    registerDefaultImage(fake);
    buildApi = await startBuildApi();
  });
  afterEach(async () => {
    await ledger?.close();
  });
  afterAll(async () => {
    buildApi?.close();
    await fake?.close();
  });

  const payload = (id: number): string => faultPayload(QUEUE, id);
  const instancesOf = (jobId: number): FakeEc2Instance[] => fake.instances.filter((instance) => instance.tags[TAG_JOB_ID] === String(jobId));

  it('requeues the run, runs the job again on a fresh VM to passed with a complete log, and leaves no VM', async () => {
    const jobId = 7101;
    const signal = AbortSignal.timeout(25_000);
    ledger = await startLedger(amqp.vhost.uri, { onReset: (id) => publishRaw(amqp.vhost.uri, '', QUEUE, payload(id)) });
    buildApi.scripts.set(jobId, ENDLESS_SCRIPT);
    const worker = await amqp.start({
      TRAVIS_WORKER_PROVIDER_NAME: 'ec2',
      ...ec2Env(fake),
      TRAVIS_WORKER_BUILD_API_URI: buildApi.uri,
      TRAVIS_WORKER_HOSTNAME: 'fault-sshd-worker',
    });
    await publishRaw(amqp.vhost.uri, '', QUEUE, payload(jobId));

    await ledger.untilLogged(jobId, 'line 5\r\n', signal);
    const [first, ...others] = instancesOf(jobId);
    expect(others).toEqual([]);
    const sshd = first?.sshd;
    if (!first || !sshd) throw new Error('the job runs on no VM with an sshd');
    // The run after the fault gets a script that ends.
    buildApi.scripts.set(jobId, FINISHING_SCRIPT);
    await sshd.stop();

    await ledger.untilFinished([jobId], signal);
    expect(ledger.states(jobId)).toEqual(['received', 'started', 'reset', 'received', 'started', 'passed']);
    await ledger.untilLogged(jobId, FINISHING_LAST_LINE, signal);
    await worker.stop();
    const runs = instancesOf(jobId);
    expect(runs.map((instance) => instance.state)).toEqual(['terminated', 'terminated']);
    expect(runs[1]?.instanceId).not.toBe(first.instanceId);

    const report = ledger.report('sshd killed mid-script', [jobId], { vmsLeaked: fake.live().length });
    expect(report.problems).toEqual([]);
    expect(report).toMatchObject({ jobsRun: 1, jobsLost: 0, partsLost: 0, duplicateTerminalStates: 0, vmsLeaked: 0 });
  });
});
