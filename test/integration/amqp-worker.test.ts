/**
 * The whole worker against the real broker and real sshd "VMs": jobs
 * published by hand in travis' format, and what comes out on
 * `reporting.jobs.builds` and `reporting.jobs.logs`, checked message by
 * message against the wire protocol (docs/protocol.md).
 */
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_REQUEUE_LIMIT } from '../../src/job/requeues.js';
import { MAX_SCRIPT_BYTES } from '../../src/job/script.js';
import type { JobDone } from '../../src/worker.js';
import type { CancelCommand } from '../../src/queue/contract.js';
import type { Logger } from '../../src/logger.js';
import { startBuildApi, type FakeBuildApi } from '../helpers/build-api.js';
import { useAmqpWorker } from '../helpers/amqp-worker.js';
import { drain, messageCount, publishRaw, withChannel, type DrainedMessage } from '../helpers/rabbitmq.js';
import { captureLog } from '../helpers/log-capture.js';
import { freePort } from '../helpers/ports.js';
import { generateClientKey, startSshd, type SshdTarget } from '../helpers/sshd.js';
import type { TestWorker } from '../helpers/worker.js';

const QUEUE = 'builds.test';
const amqp = useAmqpWorker(QUEUE);
let key: { privateKey: string; publicKey: string };
let target: SshdTarget;
let buildApi: FakeBuildApi;

beforeAll(async () => {
  key = generateClientKey();
  target = await startSshd({ authorizedKeys: [key.publicKey] });
  buildApi = await startBuildApi('s3cr3t-token');
});

afterAll(async () => {
  buildApi?.close();
  await target?.stop();
});

function start(env: Record<string, string> = {}, logger?: Logger): Promise<TestWorker> {
  const settings = {
    TRAVIS_WORKER_BUILD_API_URI: buildApi.uri,
    TRAVIS_WORKER_PROVIDER_NAME: 'ssh',
    TRAVIS_WORKER_SSH_HOSTS: `${target.host}:${target.port}`,
    TRAVIS_WORKER_SSH_USER: target.username,
    TRAVIS_WORKER_SSH_KEY: key.privateKey,
    TRAVIS_WORKER_INFRA: 'test-infra',
  };
  return amqp.start({ ...settings, ...env }, logger);
}

/** A payload in the shape of a real one (docs/protocol.md's example), for job `id`. */
function travisPayload(id: number, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    type: 'test',
    vm_type: 'default',
    queue: 'builds.test',
    uuid: `uuid-${id}`,
    config: { language: 'ruby', script: 'echo Hello World', os: 'linux', group: 'stable', dist: 'trusty' },
    env_vars: [],
    job: { id, number: '445.1', commit: 'fad82cc7', branch: 'master', pull_request: false, queued_at: '2018-05-14T14:26:50Z' },
    source: { id: 721269, number: '445', event_type: 'push' },
    repository: { id: 44461, slug: 'octo/hello-world' },
    ssh_key: null,
    timeouts: { hard_limit: 3000, log_silence: null },
    ...extra,
  };
}

async function publishJob(payload: Record<string, unknown> | string): Promise<void> {
  await publishRaw(amqp.vhost.uri, '', QUEUE, typeof payload === 'string' ? payload : JSON.stringify(payload));
}

const timeout = (): AbortSignal => AbortSignal.timeout(20_000);

/** Write an executable file named `name` holding `text` into a fresh directory; its path. */
const scratchDirs: string[] = [];
afterAll(async () => {
  await Promise.all(scratchDirs.map((dir) => rm(dir, { recursive: true, force: true })));
});

async function executable(name: string, text: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'mayfly-filter-'));
  scratchDirs.push(dir);
  const path = join(dir, name);
  await writeFile(path, text, { mode: 0o755 });
  return path;
}

/** Every message now in a reporting queue (the worker publishes with confirms before it settles a job). */
async function drainAll(queue: string): Promise<DrainedMessage[]> {
  return drain(amqp.vhost.uri, queue, await messageCount(amqp.vhost.uri, queue), timeout());
}

/** Consume log parts until their text contains `text`; returns the parts consumed. */
async function logPartsUntil(text: string): Promise<DrainedMessage[]> {
  const parts: DrainedMessage[] = [];
  const signal = timeout();
  while (!logTextOf(parts).includes(text)) parts.push(...(await drain(amqp.vhost.uri, 'reporting.jobs.logs', 1, signal)));
  return parts;
}

const statesOf = (messages: DrainedMessage[]): string[] => messages.map((m) => (m.body as { state: string }).state);
const logTextOf = (messages: DrainedMessage[]): string => messages.map((m) => (m.body as { log: string }).log).join('');

describe('amqp worker on ssh hosts', () => {
  it('turns a travis payload into exactly the state updates and log parts of the protocol', async () => {
    const w = await start();
    const jobId = 721270;
    buildApi.scripts.set(jobId, 'echo Hello World; exit 0');
    const done = w.jobDone(jobId);
    await publishJob(travisPayload(jobId, { meta: { state_update_count: 2 } }));
    expect((await done).result).toEqual({ outcome: 'finished', state: 'passed' });

    // The build API got the raw payload plus the worker's settings, with the token as a header.
    const request = buildApi.requests.find((r) => r.url.includes(`job_id=${jobId}`));
    expect(request?.url).toBe(`/script?job_id=${jobId}&source=worker`);
    expect(request?.authorization).toBe('token s3cr3t-token');
    expect(request?.body).toMatchObject({ ...travisPayload(jobId, { meta: { state_update_count: 2 } }), paranoid: false, fix_resolv_conf: false, fix_etc_hosts: false });

    const states = await drainAll('reporting.jobs.builds');
    expect(statesOf(states)).toEqual(['received', 'started', 'passed']);
    expect(states.map((m) => m.properties.type)).toEqual(['job:test:receive', 'job:test:start', 'job:test:finish']);
    for (const message of states) {
      expect(message.properties.contentType).toBe('application/json');
      expect(message.properties.deliveryMode).toBe(2);
      expect(typeof message.properties.timestamp).toBe('number');
      expect(message.fields.exchange).toBe('');
      expect(message.fields.routingKey).toBe('reporting.jobs.builds');
    }
    const rfc3339 = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/;
    const [received, started, passed] = states.map((m) => m.body as Record<string, unknown>);
    expect(received).toEqual({
      id: jobId,
      state: 'received',
      meta: { state_update_count: 2, uuid: `uuid-${jobId}` },
      queued_at: '2018-05-14T14:26:50Z',
      received_at: expect.stringMatching(rfc3339),
    });
    expect(started).toEqual({
      id: jobId,
      state: 'started',
      meta: { state_update_count: 3, uuid: `uuid-${jobId}`, instance_id: expect.any(String) },
      queued_at: '2018-05-14T14:26:50Z',
      received_at: received?.received_at,
      started_at: expect.stringMatching(rfc3339),
    });
    expect(passed).toEqual({
      id: jobId,
      state: 'passed',
      meta: { state_update_count: 4, uuid: `uuid-${jobId}`, instance_id: expect.any(String) },
      queued_at: '2018-05-14T14:26:50Z',
      received_at: received?.received_at,
      started_at: started?.started_at,
      finished_at: expect.stringMatching(rfc3339),
    });

    const parts = await drainAll('reporting.jobs.logs');
    expect(parts.length).toBeGreaterThanOrEqual(2);
    expect(parts.map((m) => (m.body as { number: number }).number)).toEqual(parts.map((_m, i) => i));
    for (const [i, message] of parts.entries()) {
      const part = message.body as Record<string, unknown>;
      const last = i === parts.length - 1;
      expect(message.properties.type).toBe('job:test:log');
      expect(message.properties.deliveryMode).toBe(2);
      expect(message.properties.contentType).toBe('application/json');
      expect(message.fields.exchange).toBe('reporting');
      expect(message.fields.routingKey).toBe('reporting.jobs.logs');
      expect(part.id).toBe(jobId);
      expect(part.uuid).toBe(`uuid-${jobId}`);
      expect(part.final).toBe(last);
      expect(Buffer.byteLength(part.log as string)).toBeLessThanOrEqual(1653);
      if (last) expect(part.log).toBe('');
    }
    // The first part published after `started` carries the meta, and no other part does: the part
    // holding the worker information, the first text written after `started`.
    const firstAfterStarted = parts.findIndex((m) => (m.body as { log: string }).log.includes('travis_fold:start:worker_info'));
    expect(firstAfterStarted).toBeGreaterThanOrEqual(0);
    expect(parts.flatMap((m, i) => ('meta' in (m.body as object) ? [i] : []))).toEqual([firstAfterStarted]);
    // The key order is travis'.
    const withMeta = parts[firstAfterStarted]?.body as { meta: unknown };
    expect(Object.keys(withMeta)).toEqual(['id', 'log', 'number', 'uuid', 'final', 'meta']);
    expect(withMeta.meta).toEqual({
      queued_at: '2018-05-14T14:26:50Z',
      repo: 'octo/hello-world',
      queue: 'builds.test',
      infra: 'test-infra',
    });
    const log = logTextOf(parts);
    expect(log).toContain('travis_fold:start:worker_info');
    expect(log).toContain('Hello World\r\n');

    // Acknowledged: nothing left in the job queue, nothing redelivered.
    expect(await messageCount(amqp.vhost.uri, QUEUE)).toBe(0);
  });

  it('writes the backend progress in a fold only with TRAVIS_WORKER_PROGRESS_TYPE=text, as travis does', async () => {
    const w = await start({ TRAVIS_WORKER_PROGRESS_TYPE: 'text' });
    const jobId = 810;
    buildApi.scripts.set(jobId, 'echo hi');
    const done = w.jobDone(jobId);
    await publishJob(travisPayload(jobId));
    await done;
    const log = logTextOf(await drainAll('reporting.jobs.logs'));
    // step_start_instance.go's fold, and backend/text_progresser.go's neutral line.
    const fold =
      'travis_fold:start:step_start_instance\r\x1b[0K\x1b[33;1mStarting instance\x1b[0m\r\n' +
      `• Using host ${target.host}:${target.port}\r\n` +
      'travis_fold:end:step_start_instance\r\x1b[0K';
    expect(log).toContain(fold);
    expect(log.indexOf(fold)).toBeLessThan(log.indexOf('travis_fold:start:worker_info'));
  });

  it('pipes the payload through TRAVIS_WORKER_PAYLOAD_FILTER_EXECUTABLE before the build API', async () => {
    const filter = await executable(
      'filter.mjs',
      `#!${process.execPath}\nlet text = '';\nprocess.stdin.on('data', (c) => (text += c));\nprocess.stdin.on('end', () => {\n  const payload = JSON.parse(text);\n  payload.filtered_by = 'ops';\n  delete payload.env_vars;\n  process.stdout.write(JSON.stringify(payload));\n});\n`,
    );
    const w = await start({ TRAVIS_WORKER_PAYLOAD_FILTER_EXECUTABLE: filter });
    const jobId = 811;
    buildApi.scripts.set(jobId, 'echo filtered');
    const done = w.jobDone(jobId);
    await publishJob(travisPayload(jobId, { env_vars: [{ name: 'SECRET', value: 'x', public: false }] }));
    expect((await done).result).toEqual({ outcome: 'finished', state: 'passed' });
    const sent = buildApi.requests.find((r) => r.url.includes(`job_id=${jobId}`))?.body;
    expect(sent).toMatchObject({ filtered_by: 'ops', job: { id: jobId } });
    expect(sent).not.toHaveProperty('env_vars');
  });

  it('errors a job whose payload filter fails, its log saying so, without asking the build API', async () => {
    const filter = await executable('failing-filter.sh', '#!/bin/sh\ncat >/dev/null\nexit 3\n');
    const w = await start({ TRAVIS_WORKER_PAYLOAD_FILTER_EXECUTABLE: filter });
    const jobId = 812;
    const done = w.jobDone(jobId);
    await publishJob(travisPayload(jobId));
    expect((await done).result).toEqual({ outcome: 'finished', state: 'errored' });
    expect(statesOf(await drainAll('reporting.jobs.builds'))).toEqual(['received', 'errored']);
    expect(logTextOf(await drainAll('reporting.jobs.logs'))).toContain('The job payload filter (TRAVIS_WORKER_PAYLOAD_FILTER_EXECUTABLE) exited with status 3.');
    expect(buildApi.requests.some((r) => r.url.includes(`job_id=${jobId}`))).toBe(false);
  });

  it.each([
    [1, 'failed'],
    [5, 'errored'],
  ])('reports exit status %i as %s', async (code, state) => {
    const w = await start();
    const jobId = 800 + code;
    buildApi.scripts.set(jobId, `echo bye; exit ${code}`);
    const done = w.jobDone(jobId);
    await publishJob(travisPayload(jobId));
    expect((await done).result).toEqual({ outcome: 'finished', state });
    expect(statesOf(await drainAll('reporting.jobs.builds'))).toEqual(['received', 'started', state]);
  });

  it('requeues (reset) a job whose SSH connection drops mid-script, and acknowledges it', async () => {
    const w = await start();
    const jobId = 900;
    buildApi.scripts.set(jobId, 'echo running; sleep 60');
    const done = w.jobDone(jobId);
    await publishJob(travisPayload(jobId));
    // Drop the connection once the script runs (its output is in the log).
    await logPartsUntil('running');
    await target.dropConnections();
    expect((await done).result).toEqual({ outcome: 'requeued', cause: 'E_CONNECTION_LOST', instanceReady: true });
    const states = await drainAll('reporting.jobs.builds');
    expect(statesOf(states)).toEqual(['received', 'started', 'reset']);
    expect(states[2]?.properties.type).toBe('job:test:reset');
    expect((states[2]?.body as { meta: { state_update_count: number } }).meta.state_update_count).toBe(2);
    expect(await messageCount(amqp.vhost.uri, QUEUE)).toBe(0);
  });

  it('requeues a job whose host never accepts the upload within the upload timeout', async () => {
    const w = await start({ TRAVIS_WORKER_SSH_HOSTS: '127.0.0.1:1', TRAVIS_WORKER_SCRIPT_UPLOAD_TIMEOUT: '300ms' });
    const jobId = 901;
    const done = w.jobDone(jobId);
    await publishJob(travisPayload(jobId));
    const { result } = await done;
    expect(result.outcome).toBe('requeued');
    expect(statesOf(await drainAll('reporting.jobs.builds'))).toEqual(['received', 'reset']);
  });

  // With the default limit (the setting unset): without a limit the job goes round for ever.
  it('errors a job requeued the default limit of times in a row instead of requeueing it again', async () => {
    // A build API that refuses connections: every attempt is an infrastructure failure, requeued (the circuit breaker, off here, would hold the job back).
    const w = await start({ TRAVIS_WORKER_BUILD_API_URI: `http://127.0.0.1:${await freePort()}/script`, TRAVIS_WORKER_BUILD_API_TIMEOUT: '10ms', TRAVIS_WORKER_BREAKER_THRESHOLD: '0' });
    const jobId = 904;
    const expected = [...Array<unknown>(DEFAULT_REQUEUE_LIMIT).fill({ outcome: 'requeued', cause: 'E_SCRIPT_UNAVAILABLE', instanceReady: false }), { outcome: 'finished', state: 'errored' }];
    const results: JobDone['result'][] = [];
    // The test plays the hub: a `reset` job is published again.
    do {
      const done = w.jobDone(jobId);
      await publishJob(travisPayload(jobId));
      results.push((await done).result);
    } while (results.at(-1)?.outcome === 'requeued');
    expect(results).toEqual(expected);
    expect(statesOf(await drainAll('reporting.jobs.builds'))).toEqual([...Array<string[]>(DEFAULT_REQUEUE_LIMIT).fill(['received', 'reset']).flat(), 'received', 'errored']);
    expect(logTextOf(await drainAll('reporting.jobs.logs'))).toContain(`The job was requeued ${DEFAULT_REQUEUE_LIMIT} times in a row (the last time for E_SCRIPT_UNAVAILABLE)`);
    expect(await messageCount(amqp.vhost.uri, QUEUE)).toBe(0);
  });

  it('ends a job whose build script is over MAX_SCRIPT_BYTES errored at once, its log saying so with the limit', async () => {
    const w = await start();
    const jobId = 906;
    // Too large on this worker is too large on every worker: requeueing can't help.
    const script = `echo never runs\n${'#'.repeat(MAX_SCRIPT_BYTES)}`;
    buildApi.scripts.set(jobId, script);
    const done = w.jobDone(jobId);
    await publishJob(travisPayload(jobId));
    expect((await done).result).toEqual({ outcome: 'finished', state: 'errored' });
    buildApi.scripts.delete(jobId);
    expect(statesOf(await drainAll('reporting.jobs.builds'))).toEqual(['received', 'errored']);
    expect(logTextOf(await drainAll('reporting.jobs.logs'))).toContain(
      `The build script is too large (${Buffer.byteLength(script)} bytes): the limit is ${MAX_SCRIPT_BYTES} bytes.`,
    );
    expect(await messageCount(amqp.vhost.uri, QUEUE)).toBe(0);
  });

  it('cancels a running job on a cancel command from worker.commands', async () => {
    const w = await start();
    const jobId = 902;
    buildApi.scripts.set(jobId, 'echo running; sleep 60');
    const done = w.jobDone(jobId);
    await publishJob(travisPayload(jobId));
    await logPartsUntil('running');
    await publishRaw(amqp.vhost.uri, 'worker.commands', '', JSON.stringify({ type: 'cancel_job', job_id: jobId, source: 'api', reason: 'stop it' }));
    expect((await done).result).toEqual({ outcome: 'finished', state: 'cancelled' });
    expect(statesOf(await drainAll('reporting.jobs.builds'))).toEqual(['received', 'started', 'cancelled']);
    const parts = await drainAll('reporting.jobs.logs');
    expect(logTextOf(parts)).toContain('Done: Job Cancelled\n\nstop it');
    expect((parts.at(-1)?.body as { final: boolean }).final).toBe(true);
  });

  it('cancels a job whose cancel command came while it was still queued', async () => {
    const w = await start();
    const jobId = 903;
    buildApi.scripts.set(jobId, 'echo this must not run; exit 0');
    const heard = once(w.worker.events, 'cancel') as Promise<[CancelCommand, string]>;
    await publishRaw(amqp.vhost.uri, 'worker.commands', '', JSON.stringify({ type: 'cancel_job', job_id: jobId, source: 'api', reason: 'never mind' }));
    expect((await heard)[1]).toBe('remembered');
    const done = w.jobDone(jobId);
    await publishJob(travisPayload(jobId));
    expect((await done).result).toEqual({ outcome: 'finished', state: 'cancelled' });
    expect(statesOf(await drainAll('reporting.jobs.builds'))).toEqual(['received', 'cancelled']);
    const log = logTextOf(await drainAll('reporting.jobs.logs'));
    expect(log).toContain('never mind');
    expect(log).not.toContain('this must not run');
  });

  // travis' processor ends with its consumer, and the worker with its last processor: the supervisor's restart drops every running job.
  it('keeps its processor when the job queue is deleted: it consumes again once the queue is declared again, and runs the next job', async () => {
    const log = captureLog();
    const w = await start({}, log.logger);
    await withChannel(amqp.vhost.uri, (channel) => channel.deleteQueue(QUEUE));
    const failed = await log.waitFor((line) => line.msg === 'the job source failed; opening a fresh one', timeout());
    expect(failed).toMatchObject({ level: 'error', processor: 'test-worker:1', err: expect.stringMatching(/NOT_FOUND/) });
    // It fails again (the queue is still gone), a longer pause later, and is still in the pool.
    await log.waitFor((line) => line.msg === 'the job source failed; opening a fresh one' && line !== failed, timeout());
    expect(w.worker.pool.status()).toEqual([expect.objectContaining({ id: 'test-worker:1', state: 'starting' })]);

    await withChannel(amqp.vhost.uri, (channel) => channel.assertQueue(QUEUE, { durable: true }));
    const jobId = 905;
    buildApi.scripts.set(jobId, 'echo back');
    const done = w.jobDone(jobId);
    await publishJob(travisPayload(jobId));
    expect((await done).result).toEqual({ outcome: 'finished', state: 'passed' });
    expect(statesOf(await drainAll('reporting.jobs.builds'))).toEqual(['received', 'started', 'passed']);
  });

  it('drops a payload that is not a job without stalling, and runs the next one', async () => {
    const w = await start();
    const jobId = 904;
    buildApi.scripts.set(jobId, 'exit 0');
    const done = w.jobDone(jobId);
    await publishJob('this is not json');
    await publishJob(JSON.stringify({ job: {} }));
    await publishJob(travisPayload(jobId));
    expect((await done).result).toEqual({ outcome: 'finished', state: 'passed' });
    expect(statesOf(await drainAll('reporting.jobs.builds'))).toEqual(['received', 'started', 'passed']);
    expect(await messageCount(amqp.vhost.uri, QUEUE)).toBe(0);
  });
});
