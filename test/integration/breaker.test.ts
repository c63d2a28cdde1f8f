/**
 * Requeue storms: the whole worker on the fake backend, set to fail its
 * starts, stops taking jobs once the circuit breaker opens (the queue keeps
 * them), says so at /ready and /metrics, tries one job after the backoff,
 * and takes jobs again once starts work. On the file queue and on AMQP.
 */
import { once } from 'node:events';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { JobDone } from '../../src/worker.js';
import { STAGES } from '../../src/queue/file/layout.js';
import { freePort } from '../helpers/ports.js';
import { createVhost, messageCount, publishRaw, purge, type TestVhost } from '../helpers/rabbitmq.js';
import { allPaused as everyProcessorPaused, startTestWorker, untilProcessors, type TestWorker } from '../helpers/worker.js';

const AUTH = 'ops:breaker-test';
let worker: TestWorker | undefined;

afterEach(async () => {
  await worker?.stop();
  worker = undefined;
});

function payload(id: number): string {
  return JSON.stringify({
    type: 'test',
    job: { id, number: `${id}.1`, queued_at: '2026-11-22T10:00:00Z' },
    repository: { id: 1, slug: 'octo/storm' },
    config: { language: 'shell', script: 'true' },
    timeouts: {},
  });
}

async function get(w: TestWorker, path: string): Promise<{ status: number; text: string }> {
  const response = await fetch(`${w.worker.controlUrl}${path}`, {
    headers: { authorization: `Basic ${Buffer.from(AUTH).toString('base64')}` },
  });
  return { status: response.status, text: await response.text() };
}

/** Every job-done event from now until `count` of them came. */
async function jobsDone(w: TestWorker, count: number): Promise<JobDone[]> {
  const done: JobDone[] = [];
  while (done.length < count) {
    const [event] = (await once(w.worker.events, 'job-done')) as [JobDone];
    done.push(event);
  }
  return done;
}

const allPaused = (w: TestWorker) => untilProcessors(w.worker, everyProcessorPaused);

describe('circuit breaker on the file queue', () => {
  let base: string;
  const created = (): string => join(base, 'builds', STAGES.created);
  const finished = (): string => join(base, 'builds', STAGES.finished);

  beforeEach(async () => {
    base = await mkdtemp(join(tmpdir(), 'mayfly-breaker-'));
  });
  afterEach(async () => {
    await rm(base, { recursive: true, force: true });
  });

  async function start(env: Record<string, string>): Promise<TestWorker> {
    worker = await startTestWorker({
      TRAVIS_WORKER_QUEUE_TYPE: 'file',
      TRAVIS_WORKER_BASE_DIR: base,
      TRAVIS_WORKER_FILE_ECHO_LOGS: 'false',
      TRAVIS_WORKER_PROVIDER_NAME: 'fake',
      TRAVIS_WORKER_REMOTE_CONTROLLER_ADDR: '127.0.0.1:0',
      TRAVIS_WORKER_REMOTE_CONTROLLER_AUTH: AUTH,
      ...env,
    });
    return worker;
  }

  it('opens after THRESHOLD failed starts in a row: no job is taken, /ready and /metrics say why', async () => {
    const w = await start({
      TRAVIS_WORKER_FAKE_FAIL_START: 'true',
      TRAVIS_WORKER_POOL_SIZE: '2',
      TRAVIS_WORKER_BREAKER_THRESHOLD: '3',
      // Long enough that it stays open for the whole test.
      TRAVIS_WORKER_BREAKER_BACKOFF: '10m',
    });
    expect(await get(w, '/ready')).toEqual({ status: 200, text: 'OK' });
    const opened = once(w.worker.breaker, 'open');
    await Promise.all([1, 2].map((id) => writeFile(join(created(), `${id}.json`), payload(id))));
    const [event] = (await opened) as [{ failures: number; lastCode: string }];
    expect(event).toMatchObject({ failures: 3, lastCode: 'E_INSTANCE_START' });

    await allPaused(w);
    // Both jobs are back in the queue, and stay there: no processor is taking jobs.
    expect((await readdir(created())).sort()).toEqual(['1.json', '2.json']);
    expect(w.worker.pool.counts()).toEqual({ busy: 0, idle: 0, paused: 2 });
    const ready = await get(w, '/ready');
    expect(ready.status).toBe(503);
    expect(ready.text).toMatch(/^Not Ready: jobs failed to start 3 times in a row \(last: E_INSTANCE_START\): circuit breaker open, trying one job again in \d+s$/);
    const metrics = (await get(w, '/metrics')).text;
    expect(metrics).toMatch(/^mayfly_breaker_open\{[^}]*\} 1$/m);
    expect(metrics).toMatch(/^mayfly_breaker_openings_total\{[^}]*\} 1$/m);
    expect(w.worker.state).toBe('RUNNING');
  });

  it('holds jobs back in the queue while the build API is down, instead of taking and resetting each', async () => {
    const w = await start({
      // A build API that refuses connections.
      TRAVIS_WORKER_BUILD_API_URI: `http://127.0.0.1:${await freePort()}/script`,
      TRAVIS_WORKER_BUILD_API_TIMEOUT: '10ms',
      TRAVIS_WORKER_BREAKER_THRESHOLD: '2',
      TRAVIS_WORKER_BREAKER_BACKOFF: '10m',
    });
    const opened = once(w.worker.breaker, 'open');
    await Promise.all([1, 2, 3].map((id) => writeFile(join(created(), `${id}.json`), payload(id))));
    const [event] = (await opened) as [{ failures: number; lastCode: string }];
    expect(event).toMatchObject({ failures: 2, lastCode: 'E_SCRIPT_UNAVAILABLE' });
    await allPaused(w);
    expect((await readdir(created())).sort()).toEqual(['1.json', '2.json', '3.json']);
    expect((await get(w, '/ready')).text).toMatch(/^Not Ready: jobs failed to start 2 times in a row \(last: E_SCRIPT_UNAVAILABLE\)/);
  });

  it('half-opens after the backoff, lets one job through, reopens for longer when it fails, and closes once starts work', async () => {
    // Starts 1-3 fail: two open the breaker, the third is the first trial; the fourth works.
    const w = await start({
      TRAVIS_WORKER_FAKE_FAIL_START_COUNT: '3',
      // One processor, so which start fails is certain.
      TRAVIS_WORKER_POOL_SIZE: '1',
      TRAVIS_WORKER_BREAKER_THRESHOLD: '2',
      TRAVIS_WORKER_BREAKER_BACKOFF: '20ms',
      TRAVIS_WORKER_BREAKER_MAX_BACKOFF: '1s',
    });
    const transitions: string[] = [];
    const backoffs: number[] = [];
    w.worker.breaker.on('open', ({ backoffMs }) => {
      transitions.push('open');
      backoffs.push(backoffMs);
    });
    w.worker.breaker.on('half-open', () => transitions.push('half-open'));
    const closed = once(w.worker.breaker, 'close').then(() => transitions.push('close'));
    const done = jobsDone(w, 5);
    await Promise.all([1, 2].map((id) => writeFile(join(created(), `${id}.json`), payload(id))));

    const results = await done;
    await closed;
    expect(transitions).toEqual(['open', 'half-open', 'open', 'half-open', 'close']);
    // The second opening waits longer than the first (doubled, minus at most a quarter of jitter).
    expect(backoffs[1]).toBeGreaterThan(20);
    expect(results.map((r) => r.result)).toEqual([
      { outcome: 'requeued', cause: 'E_INSTANCE_START', instanceReady: false },
      { outcome: 'requeued', cause: 'E_INSTANCE_START', instanceReady: false },
      { outcome: 'requeued', cause: 'E_INSTANCE_START', instanceReady: false },
      { outcome: 'finished', state: 'passed' },
      { outcome: 'finished', state: 'passed' },
    ]);
    expect((await readdir(finished())).filter((name) => name.endsWith('.state')).sort()).toEqual(['1.state', '2.state']);
    expect(w.worker.breaker.state).toBe('closed');
    expect(await get(w, '/ready')).toEqual({ status: 200, text: 'OK' });
  });

  it('leaves a worker the operator paused paused when the breaker closes', async () => {
    const w = await start({ TRAVIS_WORKER_BREAKER_THRESHOLD: '1', TRAVIS_WORKER_BREAKER_BACKOFF: '5ms' });
    w.worker.pause();
    const halfOpen = once(w.worker.breaker, 'half-open');
    w.worker.breaker.recordFailure('E_NO_CAPACITY');
    await halfOpen;
    w.worker.breaker.recordSuccess();
    expect(w.worker.breaker.state).toBe('closed');
    expect(w.worker.state).toBe('PAUSED');
    expect(w.worker.pausedBy).toEqual(['operator']);
    await allPaused(w);
    expect((await get(w, '/ready')).status).toBe(503);
    w.worker.resume();
    expect(w.worker.pausedBy).toEqual([]);
    expect(await get(w, '/ready')).toEqual({ status: 200, text: 'OK' });
  });
});

describe('circuit breaker on AMQP', () => {
  const QUEUE = 'builds.breaker';
  let vhost: TestVhost;

  beforeAll(async () => {
    vhost = await createVhost();
  });
  afterAll(async () => {
    await vhost?.delete();
  });
  afterEach(async () => {
    await purge(vhost.uri, QUEUE, 'reporting.jobs.builds', 'reporting.jobs.logs');
  });

  it('hands prefetched deliveries back to the broker when it opens, and takes jobs again after it closes', async () => {
    const w = await startTestWorker({
      TRAVIS_WORKER_QUEUE_TYPE: 'amqp',
      TRAVIS_WORKER_AMQP_URI: vhost.uri,
      TRAVIS_WORKER_QUEUE_NAME: QUEUE,
      TRAVIS_WORKER_PROVIDER_NAME: 'fake',
      TRAVIS_WORKER_FAKE_FAIL_START_COUNT: '2',
      // One processor, so which start fails is certain; it has the next job prefetched when the breaker opens.
      TRAVIS_WORKER_POOL_SIZE: '1',
      TRAVIS_WORKER_BREAKER_THRESHOLD: '2',
      TRAVIS_WORKER_BREAKER_BACKOFF: '10m',
      TRAVIS_WORKER_REMOTE_CONTROLLER_ADDR: '127.0.0.1:0',
    });
    worker = w;
    const opened = once(w.worker.breaker, 'open');
    // A job requeued on AMQP goes to the hub as `reset` (it republishes it), so each failure uses up a job.
    for (const id of [11, 12, 13, 14]) await publishRaw(vhost.uri, '', QUEUE, payload(id));
    await opened;
    await allPaused(w);
    // Jobs 13 and 14 are in the queue, whether a processor had one prefetched or not.
    expect(await messageCount(vhost.uri, QUEUE)).toBe(2);

    expect((await fetch(`${w.worker.controlUrl}/ready`)).status).toBe(503);

    // The backoff is 10 minutes: half-open now, as its timer would.
    const closed = once(w.worker.breaker, 'close');
    const done = jobsDone(w, 2);
    w.worker.breaker.retryNow();
    await closed;
    const results = await done;
    expect(results.map((r) => r.result)).toEqual([
      { outcome: 'finished', state: 'passed' },
      { outcome: 'finished', state: 'passed' },
    ]);
    expect(await messageCount(vhost.uri, QUEUE)).toBe(0);
  });
});
