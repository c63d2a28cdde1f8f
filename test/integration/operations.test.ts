/**
 * Operating a worker against the real broker with the local backend: drain
 * (finish, timeout, second signal), pause/resume, pool resize, the control
 * API with and without auth, /metrics, a span per step, heartbeat, hooks.
 *
 * Jobs are shell scripts that mark that they run (`<dir>/<id>.running`) and
 * then wait for the test to let them finish (`<dir>/<id>.go`), so every
 * "while a job runs" moment is an event, not a guess about time.
 */
import { EventEmitter, once } from 'node:events';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { backends } from '../../backends/index.js';
import { loadConfig } from '../../src/config/load.js';
import { handleSignals } from '../../src/lifecycle/signals.js';
import { silentLogger } from '../../src/logger.js';
import { startWorker, type StartWorkerOptions } from '../../src/main.js';
import type { Worker } from '../../src/worker.js';
import { allPaused, callControl, nextJobDone as jobDone, untilProcessors } from '../helpers/worker.js';
import { createVhost, drain, purge, publishRaw, withChannel, type TestVhost } from '../helpers/rabbitmq.js';
import { fileAppears } from '../helpers/files.js';

const QUEUE = 'builds.ops';
const AUTH = 'ops:s3cret';
let vhost: TestVhost;
let dir: string;
let worker: Worker | undefined;

beforeAll(async () => {
  vhost = await createVhost();
});
afterAll(async () => {
  await vhost?.delete();
});
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mayfly-ops-'));
});
afterEach(async () => {
  await worker?.stop().catch(() => undefined);
  worker = undefined;
  await purge(vhost.uri, QUEUE, 'reporting.jobs.builds', 'reporting.jobs.logs');
  await rm(dir, { recursive: true, force: true });
});

async function start(env: Record<string, string> = {}, options: StartWorkerOptions = {}): Promise<Worker> {
  const config = loadConfig(backends, {
    TRAVIS_WORKER_QUEUE_TYPE: 'amqp',
    TRAVIS_WORKER_AMQP_URI: vhost.uri,
    TRAVIS_WORKER_QUEUE_NAME: QUEUE,
    TRAVIS_WORKER_PROVIDER_NAME: 'local',
    TRAVIS_WORKER_LOCAL_SCRIPTS_DIR: join(dir, 'instances'),
    TRAVIS_WORKER_INITIAL_SLEEP: '0s',
    TRAVIS_WORKER_HOSTNAME: 'ops-worker',
    ...env,
  });
  worker = await startWorker(config, backends, silentLogger, options);
  return worker;
}

/** A job that marks it runs, then waits for `<dir>/<id>.go` and exits 0. */
async function publishJob(id: number): Promise<void> {
  const running = join(dir, `${id}.running`);
  const go = join(dir, `${id}.go`);
  const payload = {
    type: 'test',
    job: { id, number: `${id}.1`, queued_at: new Date(Date.now() - 2000).toISOString() },
    repository: { id: 1, slug: 'octo/ops' },
    config: { language: 'shell', script: [`touch ${running}`, `while [ ! -e ${go} ]; do sleep 0.05; done`, 'echo finished'] },
    timeouts: {},
  };
  await publishRaw(vhost.uri, '', QUEUE, JSON.stringify(payload));
}

const running = (id: number): Promise<void> => fileAppears(join(dir, `${id}.running`));
const release = (id: number): Promise<void> => writeFile(join(dir, `${id}.go`), '');


/** The job queue's ready messages and consumers, as the broker sees them. */
async function queueInfo(): Promise<{ messageCount: number; consumerCount: number }> {
  return withChannel(vhost.uri, (channel) => channel.checkQueue(QUEUE));
}

/** The states published for `jobId` so far (reads the whole state queue). */
async function statesOf(jobId: number, count: number): Promise<string[]> {
  const messages = await drain(vhost.uri, 'reporting.jobs.builds', count, AbortSignal.timeout(10_000));
  return messages.map((m) => m.body as { id: number; state: string }).filter((b) => b.id === jobId).map((b) => b.state);
}

function call(w: Worker, method: string, path: string, options: { body?: unknown; auth?: string | null } = {}): Promise<Response> {
  return callControl(w, options.auth === undefined ? AUTH : options.auth, method, path, options.body);
}

describe('drain', () => {
  it('lets a running job finish, takes no other, and stops', async () => {
    const w = await start();
    await publishJob(1);
    await running(1);
    const done = jobDone(w, 1);
    w.drain('test');
    expect(w.state).toBe('DRAINING');
    expect(w.ready()).toBe(false);
    // Published during the drain: it must stay in the queue for another worker.
    await publishJob(2);
    await release(1);
    expect((await done).result).toEqual({ outcome: 'finished', state: 'passed' });
    await w.stopped;
    expect(w.state).toBe('STOPPED');
    expect(await statesOf(1, 3)).toEqual(['received', 'started', 'passed']);
    expect(await queueInfo()).toEqual(expect.objectContaining({ messageCount: 1, consumerCount: 0 }));
  });

  it('reports each step as an event: DRAINING, drained once the job settled, then STOPPING, STOPPED, stopped', async () => {
    const w = await start();
    const seen: string[] = [];
    w.events.on('state', (to) => seen.push(to));
    w.events.on('drained', () => seen.push('drained'));
    const stopped = once(w.events, 'stopped').then(() => seen.push('stopped'));
    await publishJob(9);
    await running(9);
    w.drain('test');
    expect(seen).toEqual(['DRAINING']);
    await release(9);
    await stopped;
    expect(seen).toEqual(['DRAINING', 'drained', 'STOPPING', 'STOPPED', 'stopped']);
  });

  it('reports no drained event when the shutdown timeout ends the drain', async () => {
    const w = await start({ TRAVIS_WORKER_SHUTDOWN_TIMEOUT: '100ms' });
    const seen: string[] = [];
    w.events.on('drained', () => seen.push('drained'));
    w.events.on('stopped', () => seen.push('stopped'));
    await publishJob(10);
    await running(10);
    w.drain('test');
    await w.stopped;
    expect(seen).toEqual(['stopped']);
  });

  it('requeues a job still running when the shutdown timeout passes, and destroys its instance', async () => {
    const w = await start({ TRAVIS_WORKER_SHUTDOWN_TIMEOUT: '300ms' });
    await publishJob(3);
    await running(3);
    expect(await readdir(join(dir, 'instances'))).toHaveLength(1);
    const done = jobDone(w, 3);
    w.drain('test');
    expect((await done).result).toEqual({ outcome: 'requeued', cause: 'shutdown', instanceReady: true });
    await w.stopped;
    expect(await statesOf(3, 3)).toEqual(['received', 'started', 'reset']);
    expect(await readdir(join(dir, 'instances'))).toEqual([]);
    // Acknowledged: the reset state is how the job runs again (docs/protocol.md).
    expect((await queueInfo()).messageCount).toBe(0);
  });

  it("requeues at once when a notice's deadline leaves no budget, cutting short a drain already under way", async () => {
    const w = await start({ TRAVIS_WORKER_SHUTDOWN_TIMEOUT: '10m', TRAVIS_WORKER_HOST_NOTICE_MARGIN: '1m' });
    await publishJob(11);
    await running(11);
    const done = jobDone(w, 11);
    w.drain('SIGTERM');
    expect(w.state).toBe('DRAINING');
    // 30 s away, less a minute's margin: nothing left for the job.
    w.drain('spot-interruption', { deadline: Date.now() + 30_000 });
    expect((await done).result).toEqual({ outcome: 'requeued', cause: 'shutdown', instanceReady: true });
    await w.stopped;
    expect(await statesOf(11, 3)).toEqual(['received', 'started', 'reset']);
    expect(await readdir(join(dir, 'instances'))).toEqual([]);
  });

  it('takes no new job after a rebalance recommendation, and lets the running one finish', async () => {
    const w = await start({ TRAVIS_WORKER_POOL_SIZE: '2' });
    await publishJob(12);
    await running(12);
    w.pause('rebalance');
    expect(w.pausedBy).toEqual(['rebalance']);
    await publishJob(13);
    const done = jobDone(w, 12);
    await release(12);
    expect((await done).result).toMatchObject({ outcome: 'finished', state: 'passed' });
    await untilProcessors(w, allPaused);
    expect(w.state).toBe('RUNNING');
    expect((await queueInfo()).messageCount).toBe(1);
  });

  it('skips the wait on a second SIGTERM', async () => {
    const w = await start({ TRAVIS_WORKER_SHUTDOWN_TIMEOUT: '10m' });
    const signals = new EventEmitter();
    const unhandle = handleSignals(w, silentLogger, signals);
    try {
      await publishJob(4);
      await running(4);
      const done = jobDone(w, 4);
      signals.emit('SIGTERM', 'SIGTERM');
      expect(w.state).toBe('DRAINING');
      signals.emit('SIGTERM', 'SIGTERM');
      expect((await done).result).toEqual({ outcome: 'requeued', cause: 'shutdown', instanceReady: true });
      await w.stopped;
      expect(await readdir(join(dir, 'instances'))).toEqual([]);
    } finally {
      unhandle();
    }
  });
});

describe('pause and resume (SIGUSR2)', () => {
  it('stops consuming while paused, even for a job published meanwhile, and takes it on resume', async () => {
    const w = await start({ TRAVIS_WORKER_POOL_SIZE: '2' });
    const signals = new EventEmitter();
    const unhandle = handleSignals(w, silentLogger, signals);
    try {
      expect((await queueInfo()).consumerCount).toBe(2);
      signals.emit('SIGUSR2', 'SIGUSR2');
      expect(w.state).toBe('PAUSED');
      expect(w.ready()).toBe(false);
      await untilProcessors(w, allPaused);
      await publishJob(5);
      expect(await queueInfo()).toEqual({ queue: QUEUE, messageCount: 1, consumerCount: 0 });

      const done = jobDone(w, 5);
      signals.emit('SIGUSR2', 'SIGUSR2');
      expect(w.state).toBe('RUNNING');
      await running(5);
      await release(5);
      expect((await done).result).toEqual({ outcome: 'finished', state: 'passed' });
    } finally {
      unhandle();
    }
  });

  it('lets a running job finish while paused', async () => {
    const w = await start();
    await publishJob(6);
    await running(6);
    const done = jobDone(w, 6);
    w.pause();
    await release(6);
    expect((await done).result).toEqual({ outcome: 'finished', state: 'passed' });
    await untilProcessors(w, allPaused);
    expect((await queueInfo()).consumerCount).toBe(0);
  });
});

describe('pool resize', () => {
  it('grows and shrinks with SIGTTIN and SIGTTOU', async () => {
    const w = await start();
    const signals = new EventEmitter();
    const unhandle = handleSignals(w, silentLogger, signals);
    try {
      signals.emit('SIGTTIN', 'SIGTTIN');
      signals.emit('SIGTTIN', 'SIGTTIN');
      await untilProcessors(w, (processors) => processors.filter((p) => p.state === 'waiting').length === 3);
      expect((await queueInfo()).consumerCount).toBe(3);
      signals.emit('SIGTTOU', 'SIGTTOU');
      await untilProcessors(w, (processors) => processors.length === 2);
      expect(w.pool.size).toBe(2);
      expect((await queueInfo()).consumerCount).toBe(2);
    } finally {
      unhandle();
    }
  });

  it('removes a busy processor only after its job', async () => {
    const w = await start();
    await publishJob(7);
    await running(7);
    const done = jobDone(w, 7);
    w.decrement();
    expect(w.pool.size).toBe(0);
    expect(w.pool.status()).toEqual([expect.objectContaining({ state: 'stopping', jobId: 7 })]);
    await release(7);
    expect((await done).result).toEqual({ outcome: 'finished', state: 'passed' });
    await untilProcessors(w, (processors) => processors.length === 0);
    expect(w.status()).toEqual(expect.objectContaining({ poolSize: 0, expectedPoolSize: 0, totalProcessed: 1 }));
    expect(w.ready()).toBe(false);
  });
});

describe('control API', () => {
  const env = { TRAVIS_WORKER_REMOTE_CONTROLLER_ADDR: '127.0.0.1:0', TRAVIS_WORKER_REMOTE_CONTROLLER_AUTH: AUTH };

  it('answers health and readiness without auth, and readiness follows the state', async () => {
    const w = await start(env);
    expect(w.controlUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const health = await call(w, 'GET', '/healthz', { auth: null });
    expect([health.status, await health.text()]).toEqual([200, 'OK']);
    const ready = await call(w, 'GET', '/ready', { auth: null });
    expect([ready.status, await ready.text()]).toEqual([200, 'OK']);
    w.pause();
    const paused = await call(w, 'GET', '/ready', { auth: null });
    expect([paused.status, await paused.text()]).toEqual([503, 'Not Ready']);
  });

  const protectedRoutes: [string, string, unknown, number][] = [
    ['GET', '/worker', undefined, 200],
    ['PATCH', '/worker', { poolSize: 2 }, 204],
    ['POST', '/pool/increment', undefined, 204],
    ['POST', '/pool/decrement', undefined, 204],
    ['GET', '/metrics', undefined, 200],
    ['DELETE', '/worker', { graceful: true }, 204],
  ];

  it.each(protectedRoutes)('%s %s needs credentials: 401 without, 403 wrong, then works', async (method, path, body, status) => {
    const w = await start(env);
    const without = await call(w, method, path, { body, auth: null });
    expect(without.status).toBe(401);
    expect(without.headers.get('www-authenticate')).toBe('Basic realm="mayfly"');
    expect((await call(w, method, path, { body, auth: 'ops:wrong' })).status).toBe(403);
    expect((await call(w, method, path, { body })).status).toBe(status);
  });

  it('answers 403 on every protected route when no auth is configured', async () => {
    const w = await start({ TRAVIS_WORKER_REMOTE_CONTROLLER_ADDR: '127.0.0.1:0' });
    const response = await call(w, 'GET', '/worker');
    expect(response.status).toBe(403);
    expect(((await response.json()) as { error: string }).error).toContain('TRAVIS_WORKER_REMOTE_CONTROLLER_AUTH');
    expect((await call(w, 'GET', '/healthz', { auth: null })).status).toBe(200);
  });

  it('reports the worker status in travis shape', async () => {
    const w = await start({ ...env, TRAVIS_WORKER_POOL_SIZE: '2' });
    await publishJob(8);
    await running(8);
    const status = (await (await call(w, 'GET', '/worker')).json()) as Record<string, unknown>;
    expect(status).toEqual(
      expect.objectContaining({
        state: 'RUNNING',
        poolSize: 2,
        expectedPoolSize: 2,
        totalProcessed: 0,
        uptime: expect.stringMatching(/s$/),
        version: expect.any(String),
        // travis' build stamps: a commit (or `?` from a checkout) and a build time.
        revision: expect.stringMatching(/^([0-9a-f]{40}|\?)$/),
        generated: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
      }),
    );
    // Either processor may have taken the job: both consume the queue.
    expect(status.processors).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ id: expect.stringMatching(/^ops-worker:[12]$/), status: 'processing', currentJobId: 8, lastJobId: 8 }),
      ]),
    );
    await release(8);
  });

  it('resizes, pauses and resumes with PATCH /worker, and refuses bad bodies naming the field', async () => {
    const w = await start(env);
    expect((await call(w, 'PATCH', '/worker', { body: { poolSize: 3 } })).status).toBe(204);
    expect(w.pool.size).toBe(3);
    expect((await queueInfo()).consumerCount).toBe(3);

    // travis reads 0 as "no size given": 204, and the pool stays as it is.
    expect((await call(w, 'PATCH', '/worker', { body: { poolSize: 0 } })).status).toBe(204);
    expect(w.pool.size).toBe(3);
    const negative = await call(w, 'PATCH', '/worker', { body: { poolSize: -1 } });
    expect(negative.status).toBe(400);
    expect(((await negative.json()) as { error: string }).error).toMatch(/^poolSize: /);
    const text = await call(w, 'PATCH', '/worker', { body: { poolSize: 'four' } });
    expect(((await text.json()) as { error: string }).error).toMatch(/^poolSize: /);
    const notJson = await call(w, 'PATCH', '/worker', { body: '{poolSize' });
    expect([notJson.status, ((await notJson.json()) as { error: string }).error]).toEqual([400, 'the body is not valid JSON']);
    const badDelete = await call(w, 'DELETE', '/worker', { body: { graceful: 'yes' } });
    expect([badDelete.status, ((await badDelete.json()) as { error: string }).error]).toEqual([400, expect.stringMatching(/^graceful: /)]);
    expect(w.state).toBe('RUNNING');

    expect((await call(w, 'PATCH', '/worker', { body: { paused: true } })).status).toBe(204);
    expect(w.state).toBe('PAUSED');
    expect((await call(w, 'PATCH', '/worker', { body: { paused: false } })).status).toBe(204);
    expect(w.state).toBe('RUNNING');
    expect((await call(w, 'GET', '/nowhere')).status).toBe(404);
    expect((await call(w, 'PUT', '/worker')).status).toBe(405);
  });

  it('pauses with DELETE {graceful, pause}, drains with DELETE {graceful}, and refuses to resume a draining worker (409)', async () => {
    const w = await start(env);
    expect((await call(w, 'DELETE', '/worker', { body: { graceful: true, pause: true } })).status).toBe(204);
    expect(w.state).toBe('PAUSED');
    await publishJob(9);
    expect((await call(w, 'PATCH', '/worker', { body: { paused: false } })).status).toBe(204);
    await running(9);
    const done = jobDone(w, 9);
    expect((await call(w, 'DELETE', '/worker', { body: { graceful: true } })).status).toBe(204);
    expect(w.state).toBe('DRAINING');
    const conflict = await call(w, 'PATCH', '/worker', { body: { paused: false } });
    expect(conflict.status).toBe(409);
    expect(((await conflict.json()) as { error: string }).error).toBe('the worker cannot go from DRAINING to RUNNING');
    expect((await call(w, 'POST', '/pool/increment')).status).toBe(409);
    await release(9);
    expect((await done).result).toEqual({ outcome: 'finished', state: 'passed' });
    await w.stopped;
  });

  it('stops at once with DELETE {graceful: false}, requeueing the running job', async () => {
    const w = await start({ ...env, TRAVIS_WORKER_SHUTDOWN_TIMEOUT: '10m' });
    await publishJob(10);
    await running(10);
    const done = jobDone(w, 10);
    expect((await call(w, 'DELETE', '/worker', { body: { graceful: false } })).status).toBe(204);
    expect((await done).result).toEqual({ outcome: 'requeued', cause: 'shutdown', instanceReady: true });
    await w.stopped;
  });
});

describe('metrics and traces', () => {
  it('counts a job at /metrics', async () => {
    const w = await start({ TRAVIS_WORKER_REMOTE_CONTROLLER_ADDR: '127.0.0.1:0', TRAVIS_WORKER_REMOTE_CONTROLLER_AUTH: AUTH });
    await publishJob(11);
    const done = jobDone(w, 11);
    await running(11);
    await release(11);
    await done;
    const text = await (await call(w, 'GET', '/metrics')).text();
    expect(text).toMatch(/^mayfly_jobs_total\{[^}]*state="passed"[^}]*\} 1$/m);
    expect(text).toMatch(/^mayfly_job_time_to_started_seconds_count\{[^}]*\} 1$/m);
    expect(text).toMatch(/^mayfly_job_queue_wait_seconds_count\{[^}]*\} 1$/m);
    expect(text).toMatch(/^mayfly_script_run_seconds_count\{[^}]*\} 1$/m);
    expect(text).toMatch(/^mayfly_log_parts_total\{backend="local"\} [1-9]/m);
    expect(text).toMatch(/^mayfly_log_bytes_total\{backend="local"\} [1-9]/m);
    expect(text).toMatch(/^mayfly_processors\{state="idle"\} 1$/m);
    expect(text).toMatch(/^mayfly_broker_connected\{queue="amqp"\} 1$/m);
    expect(text).toMatch(/^mayfly_worker_state\{state="RUNNING"\} 1$/m);
  });

  it('makes a trace per job with a span per step', async () => {
    const exporter = new InMemorySpanExporter();
    const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
    const w = await start({}, { tracer: provider.getTracer('test') });
    try {
      await publishJob(12);
      const done = jobDone(w, 12);
      await running(12);
      await release(12);
      await done;
      const spans = exporter.getFinishedSpans();
      const root = spans.find((span) => span.name === 'job');
      expect(root?.attributes).toEqual(
        expect.objectContaining({ 'job.id': 12, 'job.repository': 'octo/ops', 'worker.backend': 'local', 'job.state': 'passed' }),
      );
      const steps = spans.filter((span) => span.parentSpanContext?.spanId === root?.spanContext().spanId);
      expect(steps.map((span) => span.name)).toEqual(['received', 'script', 'start', 'upload', 'started', 'run', 'finish', 'destroy']);
      expect(new Set(spans.map((span) => span.spanContext().traceId)).size).toBe(1);
    } finally {
      await provider.shutdown();
    }
  });
});

describe('heartbeat and hooks', () => {
  let supervisor: Server | undefined;
  afterEach(() => {
    supervisor?.close();
    supervisor = undefined;
  });

  it('drains when the heartbeat URL says down, sending the token from a file', async () => {
    const authorizations: (string | undefined)[] = [];
    supervisor = createServer((request, response) => {
      authorizations.push(request.headers.authorization);
      response.setHeader('content-type', 'application/json');
      response.end('{"state":"down"}');
    });
    supervisor.listen(0, '127.0.0.1');
    await once(supervisor, 'listening');
    await writeFile(join(dir, 'token'), 'tok3n\n');
    const w = await start({
      TRAVIS_WORKER_HEARTBEAT_URL: `http://127.0.0.1:${(supervisor.address() as AddressInfo).port}/heartbeat`,
      TRAVIS_WORKER_HEARTBEAT_URL_AUTH_TOKEN: `file://${join(dir, 'token')}`,
    });
    await w.stopped;
    expect(authorizations).toEqual(['token tok3n']);
  });

  it('runs the start hook before taking jobs and the stop hook at the end', async () => {
    const w = await start({
      TRAVIS_WORKER_START_HOOK: `touch ${join(dir, 'started')}`,
      TRAVIS_WORKER_STOP_HOOK: `touch ${join(dir, 'stopped')}`,
    });
    expect(existsSync(join(dir, 'started'))).toBe(true);
    expect(existsSync(join(dir, 'stopped'))).toBe(false);
    await w.stop();
    expect(existsSync(join(dir, 'stopped'))).toBe(true);
  });
});
