/**
 * Fault: the cloud API throttles (429, RequestLimitExceeded), fails (5xx),
 * drops answers, has no capacity, and loses deletes and terminations, while
 * four jobs run two at a time. Every job must end `passed` (a start that
 * found no capacity: `reset`, then a rerun that passes), every log complete,
 * and no VM may outlive the next worker's first reaper pass. Read from the
 * broker (the ledger) and from the fakes' records.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ReapSummary } from '../../src/reaper/reaper.js';
import { FakeEc2 } from '../fakes/ec2-server.js';
import { ec2Env, registerDefaultImage } from '../fakes/ec2-settings.js';
import { FakeGce, type FakeInstanceRecord } from '../fakes/gce-server.js';
import { gceEnv, travisImages } from '../fakes/gce-settings.js';
import { useFaultWorker } from '../helpers/fault-worker.js';
import type { JobLedger } from '../helpers/job-ledger.js';

const QUEUE = 'builds.cloud-faults';
const fault = useFaultWorker(QUEUE);
const { amqp, publishJob } = fault;

/**
 * Run `jobIds` on a worker (two at a time) configured by `env`, with the
 * ledger playing the hub, until each has a terminal state; then stop the worker.
 */
async function runJobs(env: Record<string, string>, jobIds: number[], signal: AbortSignal): Promise<JobLedger> {
  const started = await fault.startLedger({ onReset: publishJob });
  const worker = await amqp.start({ ...env, TRAVIS_WORKER_BUILD_API_URI: fault.buildApiUri, TRAVIS_WORKER_POOL_SIZE: '2' });
  for (const jobId of jobIds) await publishJob(jobId);
  await started.untilFinished(jobIds, signal);
  await worker.stop();
  return started;
}

/** The first reaper pass of the next worker of the same name (it takes every instance it finds of its own, at once). */
async function nextWorkersReaperPass(env: Record<string, string>): Promise<ReapSummary | undefined> {
  const successor = await amqp.start({ ...env, TRAVIS_WORKER_REAPER_GRACE: '0s' });
  try {
    return await successor.worker.reaper?.firstPass;
  } finally {
    await successor.stop();
  }
}

/** Each job's last state. */
const finalStates = (ledger: JobLedger, jobIds: number[]): string[] => jobIds.map((id) => ledger.states(id).at(-1) ?? 'none');

describe('fault: the GCE API throttles, fails, drops answers and loses a delete', () => {
  let fake: FakeGce;

  beforeAll(async () => {
    fake = await FakeGce.start({ images: travisImages() });
  });
  afterAll(async () => {
    await fake?.close();
  });

  /** Resolves once every delete the fake has taken on is done (its VM's sshd stopped). */
  function deletesDone(): Promise<void> {
    const pending = new Set(fake.record.filter((record) => record.status === 'STOPPING' && !record.deleted));
    if (pending.size === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const onDeleted = (record: FakeInstanceRecord): void => {
        pending.delete(record);
        if (pending.size > 0) return;
        fake.events.off('deleted', onDeleted);
        resolve();
      };
      fake.events.on('deleted', onDeleted);
    });
  }

  it('runs every job to passed with a complete log; the VM whose delete was lost goes in the reaper pass', async () => {
    const jobIds = [7201, 7202, 7203, 7204];
    fake.inject('instances.insert', 'throttled', 1);
    fake.inject('instances.insert', 'server', 1);
    fake.inject('instances.insert', 'drop', 1);
    fake.inject('instances.delete', 'throttled', 1);
    fake.inject('instances.delete', 'server', 1);
    fake.lostDeletes = 1;
    // Deletions not waited for (travis' SKIP_STOP_POLL): a lost delete leaves its VM behind.
    const env = { ...gceEnv(fake, { TRAVIS_WORKER_GCE_SKIP_STOP_POLL: 'true' }), TRAVIS_WORKER_HOSTNAME: 'fault-gce-worker' };

    const ledger = await runJobs(env, jobIds, AbortSignal.timeout(25_000));
    expect(jobIds.map((id) => ledger.states(id))).toEqual(jobIds.map(() => ['received', 'started', 'passed']));
    const statuses = (operation: string): number[] =>
      fake.requests.filter((request) => request.operation === operation && request.status !== 200).map((request) => request.status);
    expect(statuses('instances.insert').sort()).toEqual([0, 429, 503]);
    expect(statuses('instances.delete').sort()).toEqual([429, 503]);
    // The dropped insert answer made no second VM.
    expect(fake.record).toHaveLength(jobIds.length);

    await deletesDone();
    const [leaked, ...more] = fake.liveInstances();
    expect(more).toEqual([]);
    expect(leaked?.deleteRequests).toBe(1);
    const summary = await nextWorkersReaperPass(env);
    expect(summary?.reaped).toEqual([{ id: leaked?.name, reason: 'orphaned' }]);
    await deletesDone();

    const report = ledger.report('gce API throttles, fails, loses a delete', jobIds, { vmsLeaked: fake.liveInstances().length });
    expect(report.problems).toEqual([]);
    expect(report).toMatchObject({ jobsRun: 4, jobsLost: 0, partsLost: 0, duplicateTerminalStates: 0, vmsLeaked: 0 });
  });
});

describe('fault: the EC2 API throttles, fails, has no capacity and loses a termination', () => {
  let fake: FakeEc2;

  beforeAll(async () => {
    fake = await FakeEc2.start({ bootDelayMs: 20 });
    registerDefaultImage(fake);
  });
  afterAll(async () => {
    await fake?.close();
  });

  it('runs every job to passed (the one without capacity after a reset) with a complete log, and leaves no VM', async () => {
    const jobIds = [7301, 7302, 7303, 7304];
    fake.failNext('RunInstances', 1, 'throttle');
    fake.failNext('RunInstances', 1, 'server-error');
    fake.failNext('RunInstances', 1, 'capacity');
    fake.failNext('TerminateInstances', 1, 'throttle');
    fake.failNext('TerminateInstances', 1, 'unavailable');
    fake.loseTerminations(1);
    const env = { TRAVIS_WORKER_PROVIDER_NAME: 'ec2', ...ec2Env(fake), TRAVIS_WORKER_HOSTNAME: 'fault-ec2-worker' };

    const ledger = await runJobs(env, jobIds, AbortSignal.timeout(25_000));
    expect(finalStates(ledger, jobIds)).toEqual(jobIds.map(() => 'passed'));
    // Exactly one start found no capacity: that job was requeued once and ran again.
    expect(jobIds.flatMap((id) => ledger.states(id)).filter((state) => state === 'reset')).toEqual(['reset']);
    const errors = (action: 'RunInstances' | 'TerminateInstances'): string[] =>
      fake.callsOf(action).flatMap((call) => (call.errorCode === undefined ? [] : [call.errorCode])).sort();
    expect(errors('RunInstances')).toEqual(['InsufficientInstanceCapacity', 'InternalError', 'RequestLimitExceeded']);
    expect(errors('TerminateInstances')).toEqual(['RequestLimitExceeded', 'Unavailable']);
    // Besides the jobs' instances, the start that failed after a retry replayed its launch (was an instance made?) and ended what it made.
    expect(fake.instances.map((instance) => instance.state)).toEqual(fake.instances.map(() => 'terminated'));
    // The lost termination was noticed and sent again.
    expect(fake.instances.map((instance) => instance.terminateRequests).filter((requests) => requests !== 1)).toEqual([2]);

    const summary = await nextWorkersReaperPass(env);
    expect(summary?.reaped).toEqual([]);
    const report = ledger.report('ec2 API throttles, fails, has no capacity, loses a termination', jobIds, { vmsLeaked: fake.live().length });
    expect(report.problems).toEqual([]);
    expect(report).toMatchObject({ jobsRun: 4, jobsLost: 0, partsLost: 0, duplicateTerminalStates: 0, vmsLeaked: 0 });
  });
});
