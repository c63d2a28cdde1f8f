/**
 * Faults between the worker and RabbitMQ, injected by a TCP proxy (test
 * code) the worker's connections go through:
 * - the jobs connection is cut, or stalls (only heartbeats notice), while a
 *   script runs: the delivery is lost, so the run stops at once and its VM
 *   is destroyed; `/ready` says why meanwhile; once the broker is back the
 *   worker reconnects by itself and runs the redelivered job to the end;
 * - the jobs connection is cut after the terminal state was confirmed, before
 *   the ack: the redelivery is acknowledged without a second run;
 * - the logs connection is cut while a script prints: the job goes on, the
 *   unconfirmed log parts go out again with their numbers, none is lost;
 * - the logs broker stays away past the log delivery timeout: the worker
 *   stops reading the script's output meanwhile (memory stays bounded), the
 *   job is requeued, and runs again once the broker is back.
 * Read from the broker (the ledger) and the fake EC2 (no VM left).
 */
import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { TAG_JOB_ID } from '../../backends/ec2/tags.js';
import { FakeEc2, type FakeEc2Instance } from '../fakes/ec2-server.js';
import { ec2Env, registerDefaultImage } from '../fakes/ec2-settings.js';
import type { Logger } from '../../src/logger.js';
import { useAmqpWorker } from '../helpers/amqp-worker.js';
import { captureLog } from '../helpers/log-capture.js';
import { startBuildApi, type FakeBuildApi } from '../helpers/build-api.js';
import { ENDLESS_SCRIPT, FINISHING_LAST_LINE, FINISHING_SCRIPT, SLOW_SCRIPT, faultPayload } from '../helpers/fault-jobs.js';
import { startLedger, type JobLedger } from '../helpers/job-ledger.js';
import { BROKER, messageCount, publishRaw } from '../helpers/rabbitmq.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';
import type { ProcessorStatus } from '../../src/processor.js';
import { allPaused, basicAuth, untilProcessors, type TestWorker } from '../helpers/worker.js';

const QUEUE = 'builds.ec2';
const SLOW_LAST_LINE = 'line 60\r\n';
/**
 * The flood: 8 KiB lines as fast as the PTY takes them (tens of MB/s on
 * loopback), counting them in a file the test reads (the fake's VMs run on
 * this machine).
 */
const FLOOD_CHUNK_BYTES = 8 * 1024;
const FLOOD_CHUNKS = 10_000;
const floodScript = (progress: string): string =>
  `chunk=$(head -c ${FLOOD_CHUNK_BYTES - 1} /dev/zero | tr '\\0' x); ` +
  `for i in $(seq 1 ${FLOOD_CHUNKS}); do echo "$chunk"; echo $i > ${progress}; done`;
/**
 * What may sit between the script and the broker while it is away: the SSH
 * channel window (2 MiB), the channel and log writer buffers (64 KiB each),
 * the log sink's window (64 parts), the PTY's and sshd's buffers. Twice
 * that, in round figures; unthrottled, two seconds of flood are 20 MB or more.
 */
const FLOOD_BOUND_BYTES = 5 * 1024 * 1024;

async function chunksWritten(progress: string): Promise<number> {
  const text = await readFile(progress, 'utf8').catch(() => '0');
  return Number(text.trim() || '0');
}

const CONTROL_AUTH = 'operator:fault-suite';

/** More than heartbeats (8-byte frames) add up to while a part is on its way: a log part's publish is a few hundred bytes. */
const LOG_PART_ON_THE_WIRE_BYTES = 200;

describe('fault: the broker connection', () => {
  const amqp = useAmqpWorker(QUEUE);
  let fake: FakeEc2;
  let buildApi: FakeBuildApi;
  let proxy: TcpProxy;
  let ledger: JobLedger | undefined;

  beforeAll(async () => {
    fake = await FakeEc2.start({ bootDelayMs: 20 });
    registerDefaultImage(fake);
    buildApi = await startBuildApi();
  });
  beforeEach(async () => {
    const broker = new URL(BROKER);
    proxy = await TcpProxy.start({ host: broker.hostname, port: Number(broker.port) });
  });
  afterEach(async () => {
    await ledger?.close();
    ledger = undefined;
    await proxy.close();
  });
  afterAll(async () => {
    buildApi?.close();
    await fake?.close();
  });

  const payload = (id: number): string => faultPayload(QUEUE, id);
  const instancesOf = (jobId: number): FakeEc2Instance[] => fake.instances.filter((instance) => instance.tags[TAG_JOB_ID] === String(jobId));

  /** A worker on the fake EC2 whose connections are as `env` says, with a fast heartbeat and reconnect. */
  function startWorker(env: Record<string, string>, logger?: Logger): Promise<TestWorker> {
    const settings = {
      TRAVIS_WORKER_PROVIDER_NAME: 'ec2',
      ...ec2Env(fake),
      TRAVIS_WORKER_BUILD_API_URI: buildApi.uri,
      TRAVIS_WORKER_HOSTNAME: 'fault-broker-worker',
      TRAVIS_WORKER_AMQP_HEARTBEAT: '1s',
      TRAVIS_WORKER_AMQP_RECONNECT_BACKOFF: '100ms',
      TRAVIS_WORKER_AMQP_RECONNECT_MAX_BACKOFF: '500ms',
    };
    return amqp.start({ ...settings, ...env }, logger);
  }

  /** The ledger, standing in for the hub: a `reset` puts the job back on the queue. */
  async function openLedger(): Promise<JobLedger> {
    ledger = await startLedger(amqp.vhost.uri, { onReset: (id) => publishRaw(amqp.vhost.uri, '', QUEUE, payload(id)) });
    return ledger;
  }

  async function expectCleanReport(scenario: string, jobId: number): Promise<void> {
    const report = (ledger as JobLedger).report(scenario, [jobId], { vmsLeaked: fake.live().length });
    expect(report.problems).toEqual([]);
    expect(report).toMatchObject({ jobsRun: 1, jobsLost: 0, partsLost: 0, duplicateTerminalStates: 0, vmsLeaked: 0 });
  }

  for (const fault of ['cut', 'stall'] as const) {
    it(`jobs connection ${fault === 'cut' ? 'cut' : 'stalled'} mid-script: the run stops, its VM goes, /ready says why; after reconnecting the redelivered job passes`, async () => {
      const jobId = fault === 'cut' ? 7301 : 7302;
      const signal = AbortSignal.timeout(25_000);
      const journal = await openLedger();
      buildApi.scripts.set(jobId, ENDLESS_SCRIPT);
      const worker = await startWorker({
        TRAVIS_WORKER_AMQP_URI: proxy.uri(amqp.vhost.uri),
        TRAVIS_WORKER_REMOTE_CONTROLLER_ADDR: '127.0.0.1:0',
        TRAVIS_WORKER_REMOTE_CONTROLLER_AUTH: CONTROL_AUTH,
      });
      const firstRun = worker.jobDone(jobId);
      await publishRaw(amqp.vhost.uri, '', QUEUE, payload(jobId));
      await journal.untilLogged(jobId, 'line 5\r\n', signal);
      buildApi.scripts.set(jobId, FINISHING_SCRIPT);

      // The broker is unreachable until the test says so.
      proxy.refuse();
      if (fault === 'cut') proxy.cut();
      else proxy.stall();

      expect((await firstRun).result).toEqual({ outcome: 'abandoned', cause: 'delivery-lost' });
      expect(worker.worker.pausedBy).toContain('broker');
      expect(instancesOf(jobId).map((instance) => instance.state)).toEqual(['terminated']);
      const ready = await fetch(`${worker.worker.controlUrl}/ready`);
      expect(ready.status).toBe(503);
      expect(await ready.text()).toMatch(/^Not Ready: reconnecting to the jobs broker: the connection to the jobs broker closed/);
      const metrics = await (await fetch(`${worker.worker.controlUrl}/metrics`, { headers: { authorization: basicAuth(CONTROL_AUTH) } })).text();
      expect(metrics).toMatch(/^mayfly_broker_connected\{queue="amqp"\} 0$/m);
      expect(metrics).toMatch(/^mayfly_broker_outages_total\{queue="amqp"\} 1$/m);

      const accepted = proxy.accepted;
      if (fault === 'stall') proxy.cut();
      proxy.resume();
      await proxy.untilAccepted(accepted + 1, signal);
      await journal.untilFinished([jobId], signal);
      await journal.untilLogged(jobId, FINISHING_LAST_LINE, signal);
      expect((await fetch(`${worker.worker.controlUrl}/ready`)).status).toBe(200);
      expect(worker.worker.pausedBy).not.toContain('broker');
      expect(journal.states(jobId)).toEqual(['received', 'started', 'received', 'started', 'passed']);
      await worker.stop();
      expect(instancesOf(jobId).map((instance) => instance.state)).toEqual(['terminated', 'terminated']);
      await expectCleanReport(`jobs connection ${fault} mid-script`, jobId);
    });
  }

  it('every connection cut with several jobs in flight (a broker restart): each job passes exactly once, no log part lost', async () => {
    const jobIds = [7311, 7312, 7313, 7314];
    const signal = AbortSignal.timeout(28_000);
    const journal = await openLedger();
    for (const jobId of jobIds) buildApi.scripts.set(jobId, SLOW_SCRIPT);
    const uri = proxy.uri(amqp.vhost.uri);
    const worker = await startWorker({ TRAVIS_WORKER_AMQP_URI: uri, TRAVIS_WORKER_LOGS_AMQP_URI: uri, TRAVIS_WORKER_POOL_SIZE: '2' });
    for (const jobId of jobIds) await publishRaw(amqp.vhost.uri, '', QUEUE, payload(jobId));
    await journal.untilLogged(jobIds[0] as number, 'line 5\r\n', signal);

    proxy.cut();

    await journal.untilFinished(jobIds, signal);
    for (const jobId of jobIds) await journal.untilLogged(jobId, SLOW_LAST_LINE, signal);
    await worker.stop();
    const report = journal.report('every connection cut with four jobs queued or running', jobIds, { vmsLeaked: fake.live().length });
    expect(report.problems).toEqual([]);
    expect(report).toMatchObject({ jobsRun: 4, jobsLost: 0, partsLost: 0, duplicateTerminalStates: 0, vmsLeaked: 0 });
    for (const jobId of jobIds) expect(journal.states(jobId).filter((state) => state === 'passed')).toEqual(['passed']);
  });

  it('jobs connection cut after the terminal state, before the ack: the redelivery is acknowledged unrun, no second terminal state', async () => {
    const jobId = 7305;
    const signal = AbortSignal.timeout(25_000);
    const journal = await openLedger();
    buildApi.scripts.set(jobId, FINISHING_SCRIPT);
    const log = captureLog();
    const worker = await startWorker({ TRAVIS_WORKER_AMQP_URI: proxy.uri(amqp.vhost.uri) }, log.logger);
    const done = worker.jobDone(jobId);
    // The job is destroying its VM: `passed` is confirmed, the ack comes next.
    const termination = fake.hold('TerminateInstances');
    await publishRaw(amqp.vhost.uri, '', QUEUE, payload(jobId));
    await termination.arrived;

    proxy.cut();
    termination.release();

    expect((await done).result).toEqual({ outcome: 'finished', state: 'passed' });
    await log.waitFor((line) => line.job_id === jobId && /^acknowledged a redelivery of a job this worker had already reported/.test(line.msg ?? ''), signal);
    await journal.untilFinished([jobId], signal);
    expect(journal.states(jobId)).toEqual(['received', 'started', 'passed']);
    expect(await messageCount(amqp.vhost.uri, QUEUE)).toBe(0);
    await worker.stop();
    expect(instancesOf(jobId)).toHaveLength(1);
    await expectCleanReport('jobs connection cut after the terminal state, before the ack', jobId);
  });

  it('logs connection cut mid-script: the job goes on, unconfirmed parts go out again with their numbers, none is lost', async () => {
    const jobId = 7303;
    const signal = AbortSignal.timeout(25_000);
    const journal = await openLedger();
    buildApi.scripts.set(jobId, SLOW_SCRIPT);
    const log = captureLog();
    const worker = await startWorker({ TRAVIS_WORKER_LOGS_AMQP_URI: proxy.uri(amqp.vhost.uri) }, log.logger);
    const done = worker.jobDone(jobId);
    await publishRaw(amqp.vhost.uri, '', QUEUE, payload(jobId));
    await journal.untilLogged(jobId, 'line 5\r\n', signal);
    const accepted = proxy.accepted;

    // A log part (a few hundred bytes with its frames) vanishes on the way, then the connection goes.
    proxy.blackHole();
    await proxy.untilSwallowed(LOG_PART_ON_THE_WIRE_BYTES, signal);
    proxy.cut();
    await proxy.untilAccepted(accepted + 1, signal);

    expect((await done).result).toEqual({ outcome: 'finished', state: 'passed' });
    await journal.untilFinished([jobId], signal);
    await journal.untilLogged(jobId, SLOW_LAST_LINE, signal);
    expect(journal.states(jobId)).toEqual(['received', 'started', 'passed']);
    expect(log.lines.map((line) => line.msg)).toContain('log parts were not confirmed by the broker; publishing them again with their numbers');
    await worker.stop();
    await expectCleanReport('logs connection cut mid-script', jobId);
  });

  it('logs broker away past the delivery timeout: reading the output pauses, the job is requeued, and passes once the broker is back', async () => {
    const jobId = 7304;
    const signal = AbortSignal.timeout(25_000);
    const journal = await openLedger();
    const progress = join(await mkdtemp(join(tmpdir(), 'mayfly-flood-')), 'chunks');
    buildApi.scripts.set(jobId, floodScript(progress));
    const worker = await startWorker({
      TRAVIS_WORKER_LOGS_AMQP_URI: proxy.uri(amqp.vhost.uri),
      TRAVIS_WORKER_LOG_DELIVERY_TIMEOUT: '2s',
      TRAVIS_WORKER_MAX_LOG_LENGTH: String(FLOOD_CHUNKS * FLOOD_CHUNK_BYTES * 2),
    });
    const firstRun = worker.jobDone(jobId);
    await publishRaw(amqp.vhost.uri, '', QUEUE, payload(jobId));
    await journal.untilLogged(jobId, 'xxxx', signal);
    buildApi.scripts.set(jobId, FINISHING_SCRIPT);

    proxy.refuse();
    proxy.cut();
    const writtenAtCut = await chunksWritten(progress);
    expect((await firstRun).result).toEqual({ outcome: 'requeued', cause: 'log-undeliverable', instanceReady: true });
    // Taking a job now would only end the same way: the pool waits for the broker.
    await untilProcessors(worker.worker, allPaused, signal);
    expect(worker.worker.pausedBy).toContain('broker');
    // While nothing could be delivered the script was held in write(2): what it wrote meanwhile is
    // what the SSH window and the worker's bounded buffers hold, not the megabytes it could write.
    const writtenWhileAway = (await chunksWritten(progress)) - writtenAtCut;
    expect(writtenWhileAway * FLOOD_CHUNK_BYTES).toBeLessThan(FLOOD_BOUND_BYTES);
    expect(worker.worker.notReadyReason()).toMatch(/^reconnecting to the logs broker/);
    proxy.resume();

    await journal.untilFinished([jobId], signal);
    await journal.untilLogged(jobId, FINISHING_LAST_LINE, signal);
    expect(journal.states(jobId)).toEqual(['received', 'started', 'reset', 'received', 'started', 'passed']);
    await worker.stop();
    await expectCleanReport('logs broker away past the delivery timeout', jobId);
  });

  it('the broker goes again while a processor starts consuming after a reconnect: it pauses, and the worker stops without waiting for the broker', async () => {
    const signal = AbortSignal.timeout(20_000);
    const worker = await startWorker({ TRAVIS_WORKER_AMQP_URI: proxy.uri(amqp.vhost.uri) });
    const starting = (processors: ProcessorStatus[]): boolean => processors.every((processor) => processor.state === 'starting');
    proxy.cut();
    await untilProcessors(worker.worker, allPaused, signal);
    await untilProcessors(worker.worker, starting, signal);
    // Reconnected, the processor is opening its consumer: nothing it asks is answered, then the broker goes.
    proxy.stall();
    proxy.refuse();
    proxy.cut();

    await untilProcessors(worker.worker, allPaused, signal);
    await worker.stop();
    expect(worker.worker.state).toBe('STOPPED');
  });

  it('stops cleanly while the broker is away: nothing waits for it', async () => {
    const worker = await startWorker({ TRAVIS_WORKER_AMQP_URI: proxy.uri(amqp.vhost.uri) });
    const accepted = proxy.accepted;
    proxy.refuse();
    proxy.cut();
    await new Promise<void>((resolve) => proxy.onRefused(resolve));
    expect(worker.worker.ready()).toBe(false);
    await worker.stop();
    expect(worker.worker.state).toBe('STOPPED');
    expect(proxy.accepted).toBe(accepted);
  });
});
