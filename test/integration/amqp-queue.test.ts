/**
 * The amqp job queue against the real broker, in a vhost of its own
 * (test/helpers/rabbitmq.ts): declarations, consumption, state updates,
 * log parts, rejected payloads, cancel commands, and losing the broker.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { connect, type Channel, type Message } from 'amqplib';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { AmqpConfig } from '../../src/config/types.js';
import { ConfigError } from '../../src/errors.js';
import { AmqpJobQueue, type AmqpQueueOptions } from '../../src/queue/amqp/queue.js';
import { BrokerError } from '../../src/queue/amqp/errors.js';
import type { AmqpQueuedJob } from '../../src/queue/amqp/job.js';
import type { CancelCommand, JobSource, QueuedJob } from '../../src/queue/contract.js';
import { freePort } from '../helpers/ports.js';
import { captureLog, type CapturedLog } from '../helpers/log-capture.js';
import {
  closeConnections,
  createVhost,
  drain,
  listConsumers,
  messageCount,
  publishRaw,
  purge,
  rabbitmqctl,
  routeDeadLetters,
  withChannel,
  type DrainedMessage,
  type TestVhost,
  testAmqpConfig,
} from '../helpers/rabbitmq.js';

const DEAD_LETTERS = 'dead';
const TIMESTAMP = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

let vhost: TestVhost;
const cleanups: Array<() => Promise<unknown>> = [];

beforeAll(async () => {
  vhost = await createVhost();
  await routeDeadLetters(vhost, '^builds\\.', DEAD_LETTERS);
}, 60_000);

afterAll(async () => {
  await vhost?.delete();
}, 60_000);

beforeEach(async () => {
  await purge(vhost.uri, 'reporting.jobs.builds', 'reporting.jobs.logs', DEAD_LETTERS);
});

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function amqpConfig(overrides: Partial<AmqpConfig> = {}): AmqpConfig {
  return testAmqpConfig(vhost.uri, { consumerPriority: 3, ...overrides });
}

interface Harness {
  queue: AmqpJobQueue;
  queueName: string;
  log: CapturedLog;
}

/** An open queue on a job queue of its own, closed after the test. */
async function openQueue(overrides: Partial<AmqpConfig> = {}, options: Partial<AmqpQueueOptions> = {}): Promise<Harness> {
  const queueName = `builds.test-${randomBytes(4).toString('hex')}`;
  const log = captureLog();
  const queue = new AmqpJobQueue({
    config: amqpConfig(overrides),
    queueName,
    logger: log.logger,
    payloadMaxBytes: 1024 * 1024,
    hostname: 'test-host',
    ...options,
  });
  await queue.open();
  cleanups.push(() => queue.close());
  return { queue, queueName, log };
}

/** A queue whose standby consumers the broker keeps and gives nothing: what a stalled consumer looks like from the worker. */
const SINGLE_ACTIVE_CONSUMER = { durable: true, arguments: { 'x-single-active-consumer': true } };

/** An open queue on the existing `queueName`, its idle consumers asking for stalls every 100 ms; closed after the test. */
async function openStallWatched(queueName: string): Promise<{ queue: AmqpJobQueue; log: CapturedLog }> {
  const log = captureLog();
  const queue = new AmqpJobQueue({ config: amqpConfig(), queueName, logger: log.logger, payloadMaxBytes: 1024 * 1024, hostname: 'test-host', stallCheckMs: 100 });
  await queue.open();
  cleanups.push(() => queue.close());
  return { queue, log };
}

async function openSource(harness: Harness, id = 'p1'): Promise<JobSource> {
  return harness.queue.openSource(id);
}

function payload(jobId: number, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    type: 'test',
    uuid: `uuid-${jobId}`,
    job: { id: jobId, number: '445.1', queued_at: '2018-05-14T14:26:50Z' },
    source: { id: 1, number: '445', event_type: 'push' },
    repository: { id: 2, slug: 'octo/hello-world' },
    config: { language: 'ruby', script: 'echo hi' },
    meta: { state_update_count: 5 },
    timeouts: { hard_limit: 3000, log_silence: null },
    ...extra,
  };
}

async function enqueue(queueName: string, body: unknown): Promise<void> {
  await publishRaw(vhost.uri, '', queueName, typeof body === 'string' ? body : JSON.stringify(body));
}

async function nextJob(source: JobSource): Promise<QueuedJob> {
  const job = await source.next(AbortSignal.timeout(10_000));
  if (!job) throw new Error('no job');
  return job;
}

function states(count: number): Promise<DrainedMessage[]> {
  return drain(vhost.uri, 'reporting.jobs.builds', count, AbortSignal.timeout(10_000));
}

describe('AmqpJobQueue', () => {
  it('declares the protocol objects as travis does and consumes with prefetch 1, its tag and x-priority', async () => {
    const harness = await openQueue();
    await openSource(harness);

    const queues = JSON.parse(
      await rabbitmqctl('list_queues', '-p', vhost.name, 'name', 'durable', 'exclusive', 'auto_delete', '--formatter', 'json'),
    ) as Array<{ name: string; durable: boolean; exclusive: boolean; auto_delete: boolean }>;
    const byName = new Map(queues.map((q) => [q.name, q]));
    for (const name of [harness.queueName, 'reporting.jobs.builds', 'reporting.jobs.logs']) {
      expect(byName.get(name), name).toEqual({ name, durable: true, exclusive: false, auto_delete: false });
    }
    const commandQueues = queues.filter((q) => q.name.startsWith('amq.gen-'));
    expect(commandQueues).toEqual([expect.objectContaining({ exclusive: true })]);

    const exchanges = JSON.parse(
      await rabbitmqctl('list_exchanges', '-p', vhost.name, 'name', 'type', 'durable', '--formatter', 'json'),
    ) as Array<{ name: string; type: string; durable: boolean }>;
    expect(exchanges).toContainEqual({ name: 'reporting', type: 'topic', durable: true });
    expect(exchanges).toContainEqual({ name: 'worker.commands', type: 'fanout', durable: false });
    expect(exchanges.map((e) => e.name)).not.toContain('reporting.jobs.logs_sharded');

    const bindings = JSON.parse(
      await rabbitmqctl('list_bindings', '-p', vhost.name, 'source_name', 'destination_name', 'routing_key', '--formatter', 'json'),
    ) as Array<{ source_name: string; destination_name: string; routing_key: string }>;
    expect(bindings).toContainEqual({ source_name: 'reporting', destination_name: 'reporting.jobs.logs', routing_key: 'reporting.jobs.logs' });
    expect(bindings).toContainEqual({ source_name: 'worker.commands', destination_name: commandQueues[0]?.name, routing_key: '' });

    const consumers = (await listConsumers(vhost.name)).filter((c) => c.queue_name === harness.queueName);
    expect(consumers).toEqual([
      {
        queue_name: harness.queueName,
        consumer_tag: 'build-job-consumer',
        ack_required: true,
        prefetch_count: 1,
        arguments: [['x-priority', expect.any(String), 3]],
      },
    ]);

    // Passive declares agree, and the names are what a travis installation has.
    await withChannel(vhost.uri, async (channel) => {
      await channel.checkQueue(harness.queueName);
      await channel.checkQueue('reporting.jobs.builds');
      await channel.checkExchange('reporting');
    });
  }, 60_000);

  it('publishes received, started and passed with exact bodies and properties, and acknowledges only when told', async () => {
    const harness = await openQueue();
    const source = await openSource(harness);
    await enqueue(harness.queueName, payload(721270, { vm_size: 'large' }));
    const job = await nextJob(source);
    expect(job.payload.jobId).toBe(721270);

    await job.received();
    await job.started('instance-1');
    await job.finish('passed');

    const [received, started, passed] = await states(3);
    expect(received?.body).toEqual({
      id: 721270,
      state: 'received',
      meta: { state_update_count: 5, uuid: 'uuid-721270' },
      vm_size: 'large',
      queued_at: '2018-05-14T14:26:50Z',
      received_at: expect.stringMatching(TIMESTAMP),
    });
    expect(started?.body).toEqual({
      id: 721270,
      state: 'started',
      meta: { state_update_count: 6, instance_id: 'instance-1', uuid: 'uuid-721270' },
      vm_size: 'large',
      queued_at: '2018-05-14T14:26:50Z',
      received_at: expect.stringMatching(TIMESTAMP),
      started_at: expect.stringMatching(TIMESTAMP),
    });
    expect(passed?.body).toEqual({
      id: 721270,
      state: 'passed',
      meta: { state_update_count: 7, instance_id: 'instance-1', uuid: 'uuid-721270' },
      vm_size: 'large',
      queued_at: '2018-05-14T14:26:50Z',
      received_at: expect.stringMatching(TIMESTAMP),
      started_at: expect.stringMatching(TIMESTAMP),
      finished_at: expect.stringMatching(TIMESTAMP),
    });
    expect(passed?.text.startsWith('{"id":721270,"state":"passed","meta":{"state_update_count":7,')).toBe(true);
    const types = [received, started, passed].map((m) => m?.properties.type);
    expect(types).toEqual(['job:test:receive', 'job:test:start', 'job:test:finish']);
    for (const message of [received, started, passed]) {
      expect(message?.properties).toMatchObject({ contentType: 'application/json', deliveryMode: 2 });
      expect(Number.isInteger(message?.properties.timestamp)).toBe(true);
      expect(Math.abs((message?.properties.timestamp as number) - Date.now() / 1000)).toBeLessThan(3600);
    }

    // Reported but not acknowledged: the job is held by the worker, not ready...
    expect(await messageCount(vhost.uri, harness.queueName)).toBe(0);
    // ...and comes back if the worker goes away now.
    await harness.queue.close();
    const redelivered = await drain(vhost.uri, harness.queueName, 1, AbortSignal.timeout(10_000));
    expect(redelivered[0]?.fields.redelivered).toBe(true);
    expect((redelivered[0]?.body as { job: { id: number } }).job.id).toBe(721270);
  });

  it('fills received_at and started_at with the finish time when the job never got there', async () => {
    const harness = await openQueue();
    const source = await openSource(harness);
    await enqueue(harness.queueName, payload(12, { meta: undefined }));
    const job = await nextJob(source);
    await job.finish('errored');
    await job.acknowledge();
    const [errored] = await states(1);
    const body = errored?.body as Record<string, string>;
    expect(body).toMatchObject({ state: 'errored', meta: { state_update_count: 0, uuid: 'uuid-12' } });
    expect(body.received_at).toBe(body.finished_at);
    expect(body.started_at).toBe(body.finished_at);
  });

  it('publishes reset on requeue, and refuses to report anything after that', async () => {
    const harness = await openQueue();
    const source = await openSource(harness);
    await enqueue(harness.queueName, payload(13));
    const job = await nextJob(source);
    await job.received();
    await job.requeue();
    await expect(job.finish('passed')).rejects.toThrow(/cannot report/);
    await job.acknowledge();
    await source.close();

    const [received, reset] = await states(2);
    expect(received?.body).toMatchObject({ state: 'received', meta: { state_update_count: 5 } });
    expect(reset?.body).toMatchObject({ id: 13, state: 'reset', meta: { state_update_count: 6, uuid: 'uuid-13' } });
    expect(reset?.properties.type).toBe('job:test:reset');
    expect(await messageCount(vhost.uri, harness.queueName)).toBe(0);
  });

  it('rejects deliveries that are not jobs to the dead-letter route and delivers the next good one', async () => {
    const harness = await openQueue();
    const source = await openSource(harness);
    // Both carry what could be secure env vars: the log gets the reason, never the content.
    const notJson = 'this is not JSON\u0001 SECURE_TOKEN=s3cr3t-1';
    const noJobId = { job: {}, env_vars: [{ name: 'SECURE_TOKEN', value: 's3cr3t-2', public: false }] };
    await enqueue(harness.queueName, notJson);
    await enqueue(harness.queueName, noJobId);
    await enqueue(harness.queueName, payload(14));

    const job = await nextJob(source);
    expect(job.payload.jobId).toBe(14);

    const dead = await drain(vhost.uri, DEAD_LETTERS, 2, AbortSignal.timeout(10_000));
    expect(dead.map((m) => m.text)).toEqual([notJson, JSON.stringify(noJobId)]);
    expect(dead[0]?.properties.headers?.['x-death']?.[0]).toMatchObject({ reason: 'rejected', queue: harness.queueName });

    const rejected = harness.log.lines.filter((line) => line.msg?.startsWith('rejected a job delivery'));
    expect(rejected).toHaveLength(2);
    expect(rejected[0]).toMatchObject({ level: 'error', reason: expect.stringMatching(/^payload is not valid JSON/), bytes: Buffer.byteLength(notJson) });
    expect(rejected[1]).toMatchObject({ reason: expect.stringContaining('job.id'), bytes: JSON.stringify(noJobId).length });
    expect(JSON.stringify(harness.log.lines)).not.toMatch(/s3cr3t|SECURE_TOKEN|this is not/);
  });

  it('publishes log parts in order, confirmed, with the uuid the states carry', async () => {
    const harness = await openQueue();
    const source = await openSource(harness);
    await enqueue(harness.queueName, payload(15, { uuid: undefined }));
    const job = await nextJob(source);
    await job.started('i-15');

    const count = 200;
    for (let n = 0; n < count; n++) {
      await job.log.publish({
        number: n,
        content: `line ${n} ünïcode\r\n`,
        final: false,
        ...(n === 0 ? { meta: { queued_at: '2018-05-14T14:26:50Z', repo: 'octo/hello-world', queue: '', infra: 'test-infra' } } : {}),
      });
    }
    await job.log.publish({ number: count, content: '', final: true });
    await job.log.flushed();
    await job.finish('passed');
    await job.acknowledge();

    const parts = await drain(vhost.uri, 'reporting.jobs.logs', count + 1, AbortSignal.timeout(20_000));
    const [startedState] = await states(1);
    const uuid = (startedState?.body as { meta: { uuid: string } }).meta.uuid;
    expect(uuid).toMatch(UUID);
    expect(parts.map((p) => (p.body as { number: number }).number)).toEqual(Array.from({ length: count + 1 }, (_, n) => n));
    expect(parts[0]?.text).toBe(
      `{"id":15,"log":"line 0 ünïcode\\r\\n","number":0,"uuid":"${uuid}","final":false,` +
        `"meta":{"queued_at":"2018-05-14T14:26:50Z","repo":"octo/hello-world","queue":"","infra":"test-infra"}}`,
    );
    expect(parts[1]?.text).toBe(`{"id":15,"log":"line 1 ünïcode\\r\\n","number":1,"uuid":"${uuid}","final":false}`);
    expect(parts[count]?.body).toEqual({ id: 15, log: '', number: count, uuid, final: true });
    expect(parts.filter((p) => (p.body as { final: boolean }).final)).toHaveLength(1);
    for (const part of parts) {
      expect(part.properties).toMatchObject({ type: 'job:test:log', contentType: 'application/json', deliveryMode: 2 });
      expect(part.fields).toMatchObject({ exchange: 'reporting', routingKey: 'reporting.jobs.logs' });
    }
  });

  it('passes valid cancel commands to the listeners and logs and drops invalid ones', async () => {
    const harness = await openQueue();
    const received: CancelCommand[] = [];
    let arrived!: () => void;
    const valid = new Promise<void>((resolve) => (arrived = resolve));
    harness.queue.onCancel(() => {
      throw new Error('a broken listener');
    });
    harness.queue.onCancel((command) => {
      received.push(command);
      arrived();
    });

    for (const bad of ['not json', '{"type":"restart","job_id":1}', '{"type":"cancel_job","job_id":"abc"}', '{"type":"cancel_job","job_id":-3}']) {
      await publishRaw(vhost.uri, 'worker.commands', '', bad);
    }
    await publishRaw(vhost.uri, 'worker.commands', '', JSON.stringify({ type: 'cancel_job', job_id: '42', source: 'api', reason: 'by user' }));
    await valid;

    expect(received).toEqual([{ jobId: 42, source: 'api', reason: 'by user' }]);
    const dropped = harness.log.lines.filter((line) => line.msg?.startsWith('dropped an invalid worker command'));
    expect(dropped.map((line) => line.field)).toEqual(['(body)', 'type', 'job_id', 'job_id']);
    expect(harness.log.lines).toContainEqual(expect.objectContaining({ level: 'error', msg: 'a cancel listener threw', job_id: 42 }));
  });

  it('aborts lost when the broker closes the connection, reconnects, and the same source takes the redelivered job', async () => {
    const harness = await openQueue();
    const source = await openSource(harness);
    await enqueue(harness.queueName, payload(16));
    const job = await nextJob(source);
    await job.received();
    const lost = new Promise<unknown>((resolve) => job.lost.addEventListener('abort', () => resolve(job.lost.reason), { once: true }));
    expect(harness.queue.notReadyReason()).toBeUndefined();

    expect(await closeConnections(vhost.name, 'mayfly test-host ')).toBe(1);

    const reason = await lost;
    expect(reason).toBeInstanceOf(BrokerError);
    expect((reason as BrokerError).message).toMatch(/job 16 was lost/);
    expect(harness.queue.notReadyReason()).toMatch(/^reconnecting to the jobs broker: the connection to the jobs broker closed/);
    await expect(job.finish('passed')).rejects.toBe(reason);
    await expect(job.acknowledge()).rejects.toBe(reason);

    const again = await nextJob(source);
    expect(again.payload.jobId).toBe(16);
    expect(harness.queue.notReadyReason()).toBeUndefined();
    await again.finish('passed');
    await again.acknowledge();
    const [state] = await drain(vhost.uri, 'reporting.jobs.builds', 2, AbortSignal.timeout(10_000)).then((states) => states.slice(-1));
    expect(state?.body).toMatchObject({ id: 16, state: 'passed' });
    expect(harness.log.lines.map((line) => line.msg)).toEqual(
      expect.arrayContaining(['lost the broker connection; reconnecting', 'reconnected to the broker']),
    );
  });

  it('subscribes to cancel commands again after reconnecting', async () => {
    const harness = await openQueue();
    const received = new Promise<CancelCommand>((resolve) => harness.queue.onCancel(resolve));
    const signal = AbortSignal.timeout(10_000);
    await harness.log.waitFor((line) => line.msg === 'consuming cancel commands', signal);
    const subscribedBefore = harness.log.lines.length;

    expect(await closeConnections(vhost.name, 'mayfly test-host ')).toBe(1);
    await harness.log.waitFor((line) => line.msg === 'reconnected to the broker', signal);
    await harness.log.waitFor((line) => line.msg === 'consuming cancel commands' && harness.log.lines.indexOf(line) >= subscribedBefore, signal);
    await publishRaw(vhost.uri, 'worker.commands', '', JSON.stringify({ type: 'cancel_job', job_id: 23, source: 'api', reason: 'after a reconnect' }));

    expect(await received).toEqual({ jobId: 23, source: 'api', reason: 'after a reconnect' });
  });

  it('acknowledges, without handing it out, a redelivery of a job it had reported when the ack was lost with the connection', async () => {
    const harness = await openQueue();
    const source = await openSource(harness);
    await enqueue(harness.queueName, payload(21));
    const job = await nextJob(source);
    await job.finish('passed');
    const lost = new Promise<void>((resolve) => job.lost.addEventListener('abort', () => resolve(), { once: true }));

    expect(await closeConnections(vhost.name, 'mayfly test-host ')).toBe(1);
    await lost;
    await expect(job.acknowledge()).rejects.toThrow(/job 21 was lost/);
    await enqueue(harness.queueName, payload(22));

    const next = await nextJob(source);
    expect(next.payload.jobId).toBe(22);
    expect(harness.log.lines).toContainEqual(
      expect.objectContaining({ msg: expect.stringMatching(/^acknowledged a redelivery of a job this worker had already reported/), job_id: 21, state: 'passed' }),
    );
    await next.finish('failed');
    await next.acknowledge();
    expect(await messageCount(vhost.uri, harness.queueName)).toBe(0);
    const reported = await states(2);
    expect(reported.map((m) => [(m.body as { id: number }).id, (m.body as { state: string }).state])).toEqual([
      [21, 'passed'],
      [22, 'failed'],
    ]);
  });

  it('names its connections, sets the heartbeat, and sends log parts on the logs connection when one is configured', async () => {
    const harness = await openQueue({ logsUri: vhost.uri });
    const rows = (await rabbitmqctl('list_connections', '-p', vhost.name, '--no-table-headers', 'timeout', 'client_properties'))
      .split('\n')
      .filter((row) => row.includes('"mayfly test-host'));
    const named = rows.map((row) => ({ timeout: row.split('\t')[0], name: row.match(/"connection_name","([^"]*)"/)?.[1] }));
    expect(named).toEqual(
      expect.arrayContaining([
        { timeout: '10', name: `mayfly test-host ${process.pid}` },
        { timeout: '10', name: `mayfly test-host ${process.pid} logs` },
      ]),
    );
    expect(named).toHaveLength(2);

    const source = await openSource(harness);
    await enqueue(harness.queueName, payload(19));
    const job = await nextJob(source);
    await job.log.publish({ number: 0, content: '', final: true });
    await job.log.flushed();
    await job.finish('passed');
    await job.acknowledge();
    const [part] = await drain(vhost.uri, 'reporting.jobs.logs', 1, AbortSignal.timeout(10_000));
    expect(part?.body).toEqual({ id: 19, log: '', number: 0, uuid: 'uuid-19', final: true });
  });

  it('aborts lost when the job channel closes under the job, and the next call takes the redelivered job', async () => {
    const harness = await openQueue();
    const source = await openSource(harness);
    await enqueue(harness.queueName, payload(20));
    const job = (await nextJob(source)) as AmqpQueuedJob;
    const lost = new Promise<unknown>((resolve) => job.lost.addEventListener('abort', () => resolve(job.lost.reason), { once: true }));
    await job.channel.close();
    expect(await lost).toMatchObject({ code: 'E_BROKER', kind: 'closed', message: expect.stringMatching(/job 20 was lost/) });

    const again = await nextJob(source);
    expect(again.payload.jobId).toBe(20);
    await again.finish('passed');
    await again.acknowledge();
    await source.close();
    expect(await messageCount(vhost.uri, harness.queueName)).toBe(0);
  });

  it('lets the job in flight finish when its queue is deleted, then fails next() clearly', async () => {
    const harness = await openQueue();
    const source = await openSource(harness);
    await enqueue(harness.queueName, payload(21));
    const job = await nextJob(source);
    await withChannel(vhost.uri, async (channel) => {
      await channel.deleteQueue(harness.queueName);
    });
    await harness.log.waitFor((line) => line.msg?.startsWith('the broker cancelled the job consumer') === true, AbortSignal.timeout(10_000));
    expect(job.lost.aborted).toBe(false);
    await job.finish('passed');
    await job.acknowledge();
    await expect(source.next(AbortSignal.timeout(10_000))).rejects.toThrow(/could not consume the job queue .*NOT_FOUND/);
    await source.close();
  });

  it('consumes again on a fresh channel when jobs wait and the broker delivers none to its idle consumer, and moves to another node when that one stalls too', async () => {
    // A single-active-consumer queue whose active consumer (another client) holds a job unacknowledged: the
    // worker's consumer is registered and given nothing while a job waits, as a stalled consumer is.
    const queueName = `builds.test-${randomBytes(4).toString('hex')}`;
    const holder = await connect(vhost.uri);
    holder.on('error', () => undefined);
    cleanups.push(() => holder.close().catch(() => undefined));
    const holding = await holder.createChannel();
    await holding.assertQueue(queueName, SINGLE_ACTIVE_CONSUMER);
    await holding.prefetch(1);
    const held = new Promise<void>((resolve) => void holding.consume(queueName, (message) => message && resolve()));
    await enqueue(queueName, payload(41));
    await held;
    const { queue, log } = await openStallWatched(queueName);
    const source = await queue.openSource('p1');
    await enqueue(queueName, payload(42));

    const next = source.next(AbortSignal.timeout(20_000));
    const stalled = await log.waitFor((line) => line.msg?.startsWith('jobs wait in the queue but the broker delivers none') === true, AbortSignal.timeout(10_000));
    expect(stalled).toMatchObject({ level: 'warn', processor: 'p1', ready_jobs: 1, in_a_row: 1 });
    // The fresh consumer stalls too, and no job runs: the connection moves on (here, one broker: to the same node again).
    const moved = await log.waitFor((line) => line.msg === 'lost the broker connection; reconnecting', AbortSignal.timeout(10_000));
    expect(moved['err']).toBe('consumers on this broker node got no jobs while jobs waited: moving to another node');
    await log.waitFor((line) => line.msg === 'reconnected to the broker', AbortSignal.timeout(10_000));
    // The holder goes: its job goes back to the head of the queue, and the fresh consumer, now the active one, is given it.
    await holder.close();
    const job = await next;
    expect(job?.payload.jobId).toBe(41);
    await job?.finish('passed');
    await job?.acknowledge();
    expect((await nextJob(source)).payload.jobId).toBe(42);
  });

  it('stays on its node while a job runs on the connection, however long another consumer stalls', async () => {
    // A single-active-consumer queue: the first source is the active consumer and runs a job; the second is given nothing.
    const queueName = `builds.test-${randomBytes(4).toString('hex')}`;
    await withChannel(vhost.uri, async (channel) => {
      await channel.assertQueue(queueName, SINGLE_ACTIVE_CONSUMER);
    });
    const { queue, log } = await openStallWatched(queueName);
    const active = await queue.openSource('p1');
    await enqueue(queueName, payload(43));
    const running = await nextJob(active);
    const standby = await queue.openSource('p2');
    await enqueue(queueName, payload(44));

    const waiting = standby.next(AbortSignal.timeout(20_000));
    await log.waitFor((line) => line.msg === 'consumers on this broker node get no jobs; staying while jobs run on it', AbortSignal.timeout(10_000));
    expect(log.lines.filter((line) => line.msg === 'lost the broker connection; reconnecting')).toEqual([]);
    expect(queue.notReadyReason()).toBeUndefined();
    await running.finish('passed');
    await running.acknowledge();
    const next = await nextJob(active);
    expect(next.payload.jobId).toBe(44);
    await next.finish('passed');
    await next.acknowledge();
    await standby.close();
    expect(await waiting).toBeUndefined();
  });

  it('counts ready jobs on a channel of its own: a count of a missing queue fails alone, and counting works again once the queue is back', async () => {
    const harness = await openQueue();
    await enqueue(harness.queueName, payload(31));
    expect(await harness.queue.readyJobs()).toBe(1);
    await withChannel(vhost.uri, async (channel) => {
      await channel.deleteQueue(harness.queueName);
    });
    // The passive declare of a missing queue closes its channel (404): only the counter's.
    await expect(harness.queue.readyJobs()).rejects.toThrow(/NOT_FOUND/);
    expect(harness.queue.notReadyReason()).toBeUndefined();
    const heard = new Promise<CancelCommand>((resolve) => harness.queue.onCancel(resolve));
    await publishRaw(vhost.uri, 'worker.commands', '', JSON.stringify({ type: 'cancel_job', job_id: '31', source: 'api', reason: 'by user' }));
    expect((await heard).jobId).toBe(31);

    // Another worker declares the queue again; the next count opens a fresh channel.
    const other = new AmqpJobQueue({ config: amqpConfig(), queueName: harness.queueName, logger: harness.log.logger, payloadMaxBytes: 1024, hostname: 'other-host' });
    await other.open();
    cleanups.push(() => other.close());
    await enqueue(harness.queueName, payload(32));
    await enqueue(harness.queueName, payload(33));
    expect(await harness.queue.readyJobs()).toBe(2);
  });

  it('stops taking jobs on source close but lets the job in flight finish first', async () => {
    const harness = await openQueue();
    const source = await openSource(harness);
    await enqueue(harness.queueName, payload(17));
    await enqueue(harness.queueName, payload(18));
    const job = await nextJob(source);
    expect(job.payload.jobId).toBe(17);

    let closed = false;
    const closing = source.close().then(() => (closed = true));
    expect(await source.next(AbortSignal.timeout(10_000))).toBeUndefined();
    await job.finish('passed');
    expect(closed).toBe(false);
    await job.acknowledge();
    await closing;

    // The second job was never taken: it is still there, first in line.
    const [left] = await drain(vhost.uri, harness.queueName, 1, AbortSignal.timeout(10_000));
    expect((left?.body as { job: { id: number } }).job.id).toBe(18);
  });
});

const run = promisify(execFile);

async function shardingPluginEnabled(): Promise<boolean> {
  const { stdout } = await run('rabbitmq-plugins', ['-q', 'list', '-e', '-m', 'rabbitmq_sharding'], { timeout: 60_000 });
  return stdout.split('\n').includes('rabbitmq_sharding');
}

describe('AmqpJobQueue with log sharding', () => {
  it('declares the x-modulus-hash exchange and routes log parts by job id, or says which plugin to enable', async () => {
    if (!(await shardingPluginEnabled())) {
      const log = captureLog();
      const queue = new AmqpJobQueue({
        config: amqpConfig({ sharding: true }),
        queueName: 'builds.sharding',
        logger: log.logger,
        payloadMaxBytes: 1024,
      });
      cleanups.push(() => queue.close());
      const failure = queue.open();
      await expect(failure).rejects.toBeInstanceOf(ConfigError);
      await expect(failure).rejects.toThrow(/rabbitmq-plugins enable rabbitmq_sharding/);
      return;
    }

    const harness = await openQueue({ sharding: true });
    const exchanges = JSON.parse(
      await rabbitmqctl('list_exchanges', '-p', vhost.name, 'name', 'type', 'durable', '--formatter', 'json'),
    ) as Array<{ name: string; type: string; durable: boolean }>;
    expect(exchanges).toContainEqual({ name: 'reporting.jobs.logs_sharded', type: 'x-modulus-hash', durable: true });

    // An operator's sharding policy would add the shard queues; one bound queue stands in for them.
    const shard = `shard-${randomBytes(4).toString('hex')}`;
    await withChannel(vhost.uri, async (channel) => {
      await channel.assertQueue(shard, { durable: false });
      await channel.bindQueue(shard, 'reporting.jobs.logs_sharded', '');
    });
    const source = await openSource(harness);
    await enqueue(harness.queueName, payload(721270));
    const job = await nextJob(source);
    await job.log.publish({ number: 0, content: 'hello\r\n', final: false });
    await job.log.publish({ number: 1, content: '', final: true });
    await job.log.flushed();
    await job.finish('passed');
    await job.acknowledge();

    const parts = await drain(vhost.uri, shard, 2, AbortSignal.timeout(10_000));
    expect(parts.map((p) => p.fields.routingKey)).toEqual(['721270', '721270']);
    expect(parts.map((p) => p.fields.exchange)).toEqual(['reporting.jobs.logs_sharded', 'reporting.jobs.logs_sharded']);
    expect(parts[1]?.body).toMatchObject({ id: 721270, number: 1, final: true, uuid: 'uuid-721270' });
  }, 60_000);
});

describe('AmqpJobQueue on several nodes', () => {
  it('connects to the next listed node when the first does not answer, and names the one in use with its password masked', async () => {
    const down = `amqp://guest:guest@127.0.0.1:${await freePort()}/${encodeURIComponent(vhost.name)}`;
    const harness = await openQueue({ uri: `${down}, ${vhost.uri}` });

    expect(harness.queue.brokerNodes()).toEqual({ jobs: vhost.uri.replace('guest:guest@', '****:****@') });
    expect(harness.queue.notReadyReason()).toBeUndefined();
    const connected = harness.log.lines.filter((line) => line.msg === 'connected to the broker');
    expect(connected.map((line) => line['uri'])).toEqual([vhost.uri.replace('guest:guest@', '****:****@')]);
  });

  it('says which node failed how, passwords masked, when none answers', async () => {
    const [first, second] = [await freePort(), await freePort()];
    const opening = openQueue({ uri: `amqp://guest:s3cret@127.0.0.1:${first},amqp://guest:s3cret@127.0.0.1:${second}` });

    const err = await opening.catch((error: unknown) => error);
    expect(err).toBeInstanceOf(BrokerError);
    expect((err as Error).message).toContain(`no node of the cluster answered: could not connect to the jobs broker at amqp://****:****@127.0.0.1:${first}`);
    expect((err as Error).message).toContain(`could not connect to the jobs broker at amqp://****:****@127.0.0.1:${second}`);
    expect((err as Error).message).not.toContain('s3cret');
  });
});

describe('AmqpJobQueue with quorum queues', () => {
  let quorumVhost: TestVhost;

  beforeAll(async () => {
    quorumVhost = await createVhost();
  }, 60_000);

  afterAll(async () => {
    await quorumVhost?.delete();
  }, 60_000);

  /** Each queue's type and arguments (rabbitmqctl lists arguments as `[name, AMQP type, value]`). */
  async function queueTypes(): Promise<Map<string, { type: string; arguments: Record<string, unknown> }>> {
    const rows = JSON.parse(await rabbitmqctl('list_queues', '-p', quorumVhost.name, 'name', 'type', 'arguments', '--formatter', 'json')) as Array<{
      name: string;
      type: string;
      arguments: Array<[string, string, unknown]>;
    }>;
    return new Map(rows.map((row) => [row.name, { type: row.type, arguments: Object.fromEntries(row.arguments.map(([name, , value]) => [name, value])) }]));
  }

  it('uses existing queues of the other type as they are instead of failing on the declare', async () => {
    const queueName = `builds.test-${randomBytes(4).toString('hex')}`;
    await withChannel(quorumVhost.uri, async (channel) => {
      await channel.assertQueue(queueName, { durable: true, arguments: { 'x-queue-type': 'quorum' } });
      await channel.assertQueue('reporting.jobs.builds', { durable: true, arguments: { 'x-queue-type': 'quorum' } });
    });

    const harness = await openQueue({ uri: quorumVhost.uri, queueType: 'classic' }, { queueName });
    const source = await openSource(harness);
    await publishRaw(quorumVhost.uri, '', queueName, JSON.stringify(payload(41)));
    const job = await nextJob(source);
    await job.received();
    await job.finish('passed');
    await job.acknowledge();

    const types = await queueTypes();
    expect(types.get(queueName)?.type).toBe('quorum');
    expect(types.get('reporting.jobs.builds')?.type).toBe('quorum');
    // What was missing was declared with the configured type.
    expect(types.get('reporting.jobs.logs')?.type).toBe('classic');
    const reported = await drain(quorumVhost.uri, 'reporting.jobs.builds', 2, AbortSignal.timeout(10_000));
    expect(reported.map((message) => message.body)).toEqual([
      expect.objectContaining({ id: 41, state: 'received' }),
      expect.objectContaining({ id: 41, state: 'passed' }),
    ]);
  });

  it('declares a missing job queue as a quorum queue that dead-letters a job delivered past the limit', async () => {
    const queueName = `builds.test-${randomBytes(4).toString('hex')}`;
    await openQueue({ uri: quorumVhost.uri, queueType: 'quorum', deliveryLimit: 2 }, { queueName });

    const types = await queueTypes();
    expect(types.get(queueName)).toMatchObject({
      type: 'quorum',
      arguments: { 'x-queue-type': 'quorum', 'x-delivery-limit': 2, 'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': `${queueName}.dead-letter` },
    });
    expect(types.get(`${queueName}.dead-letter`)?.type).toBe('quorum');

    // A job whose worker keeps dying before it acknowledges: returned to the queue each time.
    await publishRaw(quorumVhost.uri, '', queueName, JSON.stringify(payload(42)));
    await withChannel(quorumVhost.uri, async (channel) => {
      for (let delivery = 1; delivery <= 3; delivery++) {
        const message = await waitForMessage(channel, queueName);
        channel.nack(message, false, true);
      }
    });
    const [dead] = await drain(quorumVhost.uri, `${queueName}.dead-letter`, 1, AbortSignal.timeout(10_000));
    expect(dead?.body).toMatchObject({ job: { id: 42 } });
    expect(await messageCount(quorumVhost.uri, queueName)).toBe(0);
  });
});

/** The next message of `queue`, by polling `get` (a consumer would take the redeliveries too). */
async function waitForMessage(channel: Channel, queue: string): Promise<Message> {
  const deadline = AbortSignal.timeout(10_000);
  for (;;) {
    deadline.throwIfAborted();
    const message = await channel.get(queue);
    if (message !== false) return message;
    await new Promise((resolve) => setImmediate(resolve));
  }
}
