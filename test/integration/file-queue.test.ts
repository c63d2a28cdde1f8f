/**
 * The embedded defaults end to end: file queue, local backend, built-in
 * script generator. Each job's outcome is read back from the queue's
 * directories, as an operator would.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, open, readdir, rename, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EventEmitter } from 'node:events';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { handleSignals } from '../../src/lifecycle/signals.js';
import { MAX_POOL_SIZE } from '../../src/pool.js';
import { DEFAULT_REQUEUE_LIMIT } from '../../src/job/requeues.js';
import { LOG_TRAILER_RESERVE_BYTES } from '../../src/job-log/writer.js';
import { STAGES } from '../../src/queue/file/layout.js';
import { silentLogger, type Logger } from '../../src/logger.js';
import { fileAppears } from '../helpers/files.js';
import { captureLog } from '../helpers/log-capture.js';
import { freePort } from '../helpers/ports.js';
import { callControl, startTestWorker, type TestWorker } from '../helpers/worker.js';

let base: string;
let worker: TestWorker | undefined;

beforeEach(async () => {
  base = await mkdtemp(join(tmpdir(), 'mayfly-file-queue-'));
});
afterEach(async () => {
  await worker?.stop();
  worker = undefined;
  await rm(base, { recursive: true, force: true });
});

const queueDir = (stage: keyof typeof STAGES | 'log'): string => join(base, 'builds', stage === 'log' ? 'log' : STAGES[stage]);

async function start(env: Record<string, string> = {}, logger: Logger = silentLogger): Promise<TestWorker> {
  worker = await startTestWorker(
    {
      TRAVIS_WORKER_QUEUE_TYPE: 'file',
      TRAVIS_WORKER_BASE_DIR: base,
      TRAVIS_WORKER_PROVIDER_NAME: 'local',
      TRAVIS_WORKER_LOCAL_SCRIPTS_DIR: join(base, 'scripts'),
      ...env,
    },
    logger,
  );
  return worker;
}

interface JobSpec {
  id: number;
  script: string | string[];
  timeouts?: { hard_limit?: number; log_silence?: number };
  extra?: Record<string, unknown>;
}

function payloadOf({ id, script, timeouts, extra }: JobSpec): string {
  return JSON.stringify({
    type: 'test',
    job: { id, number: `${id}.1`, queued_at: '2026-11-22T10:00:00Z' },
    repository: { id: 1, slug: 'octo/repo' },
    config: { language: 'shell', script },
    timeouts: timeouts ?? {},
    ...extra,
  });
}

async function enqueue(job: JobSpec): Promise<void> {
  await writeFile(join(queueDir('created'), `${job.id}.json`), payloadOf(job));
}

const stateOf = (id: number): string => readFileSync(join(queueDir('finished'), `${id}.state`), 'utf8');
const logOf = (id: number): string => readFileSync(join(queueDir('log'), `${id}.log`), 'utf8');

describe('file queue with the local backend', () => {
  it.each([
    [0, 'passed'],
    [1, 'failed'],
    [3, 'errored'],
  ])('a script exiting %i ends %s, with its output and the worker information in the log', async (code, state) => {
    const w = await start();
    const done = w.jobDone(10 + code);
    await enqueue({ id: 10 + code, script: [`echo "job says hi"`, `exit ${code}`] });
    expect((await done).result).toEqual({ outcome: 'finished', state });
    expect(stateOf(10 + code)).toBe(state);
    const log = logOf(10 + code);
    expect(log).toContain('travis_fold:start:worker_info');
    expect(log).toContain('job says hi');
    expect(log.indexOf('worker_info')).toBeLessThan(log.indexOf('job says hi'));
    expect(await readdir(queueDir('created'))).toEqual([]);
  });

  it('stops a job at its hard limit and says so in the log', async () => {
    const w = await start();
    const done = w.jobDone(20);
    await enqueue({ id: 20, script: 'echo started; sleep 60', timeouts: { hard_limit: 1 } });
    expect((await done).result).toEqual({ outcome: 'finished', state: 'errored' });
    expect(logOf(20)).toMatch(/started[\s\S]*exceeded the maximum time limit for jobs, and has been terminated\./);
  });

  it('stops a job that is silent for longer than its log silence limit', async () => {
    const w = await start();
    const done = w.jobDone(21);
    await enqueue({ id: 21, script: 'echo talking; sleep 60', timeouts: { log_silence: 1 } });
    expect((await done).result).toEqual({ outcome: 'finished', state: 'errored' });
    expect(logOf(21)).toContain('No output has been received in the last 1s');
  });

  it('stops a job whose log passes the maximum length, keeping the whole log, closing message included, within it', async () => {
    const w = await start({ TRAVIS_WORKER_MAX_LOG_LENGTH: '5000' });
    const done = w.jobDone(22);
    await enqueue({ id: 22, script: 'while true; do echo 0123456789; done' });
    expect((await done).result).toEqual({ outcome: 'finished', state: 'errored' });
    const log = logOf(22);
    const [output] = log.split('\n\nThe job exceeded the maximum log length, and has been terminated.');
    expect(Buffer.byteLength(output as string)).toBe(5000 - LOG_TRAILER_RESERVE_BYTES);
    expect(Buffer.byteLength(log)).toBeLessThanOrEqual(5000);
  });

  it('cancels a running job: its script stops and the log says why', async () => {
    const w = await start();
    const done = w.jobDone(23);
    await enqueue({ id: 23, script: 'echo waiting; sleep 60' });
    // The cancel arrives while the job runs (after received).
    await fileAppears(join(queueDir('started'), '23.json'));
    w.worker.cancels.cancel({ jobId: 23, reason: 'cancelled by octocat', source: 'api' });
    expect((await done).result).toEqual({ outcome: 'finished', state: 'cancelled' });
    expect(logOf(23)).toContain('Done: Job Cancelled\n\ncancelled by octocat');
  });

  it('cancels a job that was cancelled before it arrived, without running it', async () => {
    const w = await start();
    w.worker.cancels.cancel({ jobId: 24, reason: 'cancelled while queued', source: 'api' });
    const done = w.jobDone(24);
    await enqueue({ id: 24, script: `touch ${join(base, 'ran')}` });
    expect((await done).result).toEqual({ outcome: 'finished', state: 'cancelled' });
    expect(existsSync(join(base, 'ran'))).toBe(false);
    expect(logOf(24)).toContain('cancelled while queued');
  });

  // With the default limit, as an operator who never heard of the setting runs it: without a limit the job goes round for ever.
  it('ends a job errored, saying why, once it was requeued the default limit of times in a row', async () => {
    // A build API that refuses connections: every attempt is an infrastructure failure, requeued.
    const w = await start({ TRAVIS_WORKER_BUILD_API_URI: `http://127.0.0.1:${await freePort()}/script`, TRAVIS_WORKER_BUILD_API_TIMEOUT: '10ms', TRAVIS_WORKER_BREAKER_THRESHOLD: '0' });
    const outcomes: string[] = [];
    w.worker.events.on('job-done', ({ jobId, result }) => {
      if (jobId === 25) outcomes.push(result.outcome === 'finished' ? result.state : result.outcome);
    });
    const done = (async () => {
      for (;;) if ((await w.jobDone(25)).result.outcome !== 'requeued') return;
    })();
    await enqueue({ id: 25, script: 'echo never runs' });
    await done;
    expect(outcomes).toEqual([...Array<string>(DEFAULT_REQUEUE_LIMIT).fill('requeued'), 'errored']);
    expect(stateOf(25)).toBe('errored');
    expect(logOf(25)).toContain(
      `The job was requeued ${DEFAULT_REQUEUE_LIMIT} times in a row (the last time for E_SCRIPT_UNAVAILABLE) and has been errored instead of being requeued again.`,
    );
  });

  it('sets aside a file that is not a job, with the reason, and runs the next job', async () => {
    const w = await start();
    // Written a while ago (not a file still being written), then moved in.
    const bad = join(base, '30.json');
    await writeFile(bad, '{"job": not json');
    const past = new Date(Date.now() - 60_000);
    await utimes(bad, past, past);
    await rename(bad, join(queueDir('created'), '30.json'));
    const done = w.jobDone(31);
    await enqueue({ id: 31, script: 'true' });
    expect((await done).result).toEqual({ outcome: 'finished', state: 'passed' });
    expect(readFileSync(join(queueDir('finished'), '30.error'), 'utf8')).toMatch(/not valid JSON/);
  });

  describe('takes regular job files only, and one bad entry costs no processor', () => {
    /** Put `make` in 10-created.d (as entry 60), then a good job 61: 60 is set aside with its reason, 61 runs on the same processor. */
    async function expectSetAside(make: (path: string) => Promise<void>, reason: RegExp): Promise<void> {
      const w = await start();
      await make(join(queueDir('created'), '60.json'));
      const done = w.jobDone(61);
      await enqueue({ id: 61, script: 'true' });
      expect((await done).result).toEqual({ outcome: 'finished', state: 'passed' });
      expect(readFileSync(join(queueDir('finished'), '60.error'), 'utf8')).toMatch(reason);
      expect(existsSync(join(queueDir('finished'), '60.json'))).toBe(true);
      expect(existsSync(join(base, 'ran'))).toBe(false);
      expect(w.worker.pool.status().map((p) => p.state)).toEqual(['waiting']);
      // Nothing was left open or waiting on the entry: the worker drains and stops.
      await w.stop();
    }

    it('does not follow a symbolic link, even to a valid job', async () => {
      const target = join(base, 'elsewhere.json');
      await writeFile(target, payloadOf({ id: 60, script: `touch ${join(base, 'ran')}` }));
      await expectSetAside((path) => symlink(target, path), /symbolic link/);
    });

    it('refuses a file over the payload size limit without reading it', async () => {
      // Sparse: 3 GiB of nothing, which can't be read into a single buffer at all.
      await expectSetAside(async (path) => {
        const file = await open(path, 'w');
        await file.truncate(3 * 1024 ** 3);
        await file.close();
      }, /over the 1048576-byte limit/);
    });

    it('refuses a FIFO without opening it for a blocking read', async () => {
      await expectSetAside(async (path) => void execFileSync('mkfifo', [path]), /is a FIFO, not a regular file/);
    });

    it('refuses a directory', async () => {
      await expectSetAside((path) => mkdir(path), /is a directory, not a regular file/);
    });
  });

  it('sets aside a job file whose name leaves no room for its .state file, without running it', async () => {
    const w = await start();
    const longName = `${'7'.repeat(250)}.json`;
    await writeFile(join(queueDir('created'), longName), payloadOf({ id: 62, script: `touch ${join(base, 'ran')}` }));
    const done = w.jobDone(63);
    await enqueue({ id: 63, script: 'true' });
    expect((await done).result).toEqual({ outcome: 'finished', state: 'passed' });
    expect(existsSync(join(base, 'ran'))).toBe(false);
    const errors = (await readdir(queueDir('finished'))).filter((name) => name.endsWith('.error'));
    expect(errors).toHaveLength(1);
    const [errorFile] = errors as [string];
    expect(errorFile.startsWith('7777')).toBe(true);
    expect(readFileSync(join(queueDir('finished'), errorFile), 'utf8')).toMatch(/file name is 255 bytes long, over the 250-byte limit/);
    expect(existsSync(join(queueDir('finished'), errorFile.replace(/\.error$/, '.json')))).toBe(true);
  });

  it('does not reject a job file caught while it is still being written', async () => {
    const log = captureLog();
    const w = await start({}, log.logger);
    const done = w.jobDone(34);
    const path = join(queueDir('created'), '34.json');
    const text = JSON.stringify({ job: { id: 34 }, repository: { slug: 'octo/repo' }, config: { script: 'true' } });
    const file = await open(path, 'w');
    await file.write(text.slice(0, 10));
    // The worker has seen the half-written file and put it back before the rest arrives.
    await log.waitFor((line) => line.msg === 'job file is still being written; reading it again later', AbortSignal.timeout(10_000));
    await file.write(text.slice(10));
    await file.close();
    expect((await done).result).toEqual({ outcome: 'finished', state: 'passed' });
    expect(existsSync(join(queueDir('finished'), '34.error'))).toBe(false);
  });

  it('ends a job with a mistyped field as errored, naming the field in its log', async () => {
    const w = await start();
    const done = w.jobDone(32);
    await enqueue({ id: 32, script: 'true', extra: { timeouts: { hard_limit: 'ten minutes' } } });
    expect((await done).result).toEqual({ outcome: 'finished', state: 'errored' });
    expect(logOf(32)).toContain('timeouts.hard_limit');
  });

  it('ends a job without a script (built-in generator) as errored, naming config.script', async () => {
    const w = await start();
    const done = w.jobDone(33);
    await enqueue({ id: 33, script: 'true', extra: { config: { language: 'shell' } } });
    expect((await done).result).toEqual({ outcome: 'finished', state: 'errored' });
    expect(logOf(33)).toContain('config.script');
  });
});

describe('file queue with the fake backend', () => {
  it('requeues a job whose instance does not start within the startup timeout', async () => {
    const w = await start({
      TRAVIS_WORKER_PROVIDER_NAME: 'fake',
      TRAVIS_WORKER_STARTUP_TIMEOUT: '100ms',
      TRAVIS_WORKER_FAKE_STARTUP_DURATION: '1m',
    });
    const done = w.jobDone(40);
    await enqueue({ id: 40, script: 'true' });
    expect((await done).result).toEqual({ outcome: 'requeued', cause: 'E_STARTUP_TIMEOUT', instanceReady: false });
  });

  it('requeues a job whose script upload fails', async () => {
    const w = await start({ TRAVIS_WORKER_PROVIDER_NAME: 'fake', TRAVIS_WORKER_FAKE_FAIL_UPLOAD: 'true' });
    const done = w.jobDone(41);
    await enqueue({ id: 41, script: 'true' });
    expect((await done).result).toEqual({ outcome: 'requeued', cause: 'E_UPLOAD', instanceReady: false });
  });

  it('requeues a job whose connection is lost mid-script', async () => {
    const w = await start({ TRAVIS_WORKER_PROVIDER_NAME: 'fake', TRAVIS_WORKER_FAKE_ERROR: 'true' });
    const done = w.jobDone(42);
    await enqueue({ id: 42, script: 'true' });
    expect((await done).result).toEqual({ outcome: 'requeued', cause: 'E_CONNECTION_LOST', instanceReady: true });
  });

  it('runs POOL_SIZE jobs at once, one per processor', async () => {
    const w = await start({ TRAVIS_WORKER_PROVIDER_NAME: 'fake', TRAVIS_WORKER_FAKE_RUN_SLEEP: '1m', TRAVIS_WORKER_POOL_SIZE: '3' });
    for (const id of [50, 51, 52, 53]) await enqueue({ id, script: 'true' });
    await Promise.all([50, 51, 52].map((id) => fileAppears(join(queueDir('started'), `${id}.json`))));
    const busy = w.worker.pool.status().filter((p) => p.state === 'processing');
    expect(busy.map((p) => p.jobId).sort()).toEqual([50, 51, 52]);
    expect(new Set(busy.map((p) => p.id)).size).toBe(3);
    expect(await readdir(queueDir('created'))).toEqual(['53.json']);
  });

  // Every way of resizing meets one cap: past the broker's channel limit, processors died and state updates failed.
  it(`holds the pool at MAX_POOL_SIZE (${MAX_POOL_SIZE}) against the control API and SIGTTIN, saying why`, async () => {
    const log = captureLog();
    const w = await start({ TRAVIS_WORKER_POOL_SIZE: String(MAX_POOL_SIZE), TRAVIS_WORKER_REMOTE_CONTROLLER_ADDR: '127.0.0.1:0', TRAVIS_WORKER_REMOTE_CONTROLLER_AUTH: 'op:cap' }, log.logger);
    const call = (method: string, path: string, body?: unknown): Promise<Response> => callControl(w.worker, 'op:cap', method, path, body);
    const refusal = `the pool cannot grow to ${MAX_POOL_SIZE + 1} processors: ${MAX_POOL_SIZE} at most`;

    const increment = await call('POST', '/pool/increment');
    expect([increment.status, ((await increment.json()) as { error: string }).error]).toEqual([409, refusal]);
    const resize = await call('PATCH', '/worker', { poolSize: MAX_POOL_SIZE + 1 });
    // A size past the cap is bad input, refused before anything grows.
    expect([resize.status, ((await resize.json()) as { error: string }).error]).toEqual([400, `poolSize: Too big: expected number to be <=${MAX_POOL_SIZE}`]);
    const signals = new EventEmitter();
    const unhandle = handleSignals(w.worker, log.logger, signals);
    try {
      signals.emit('SIGTTIN', 'SIGTTIN');
      expect(await log.waitFor((line) => line.msg === 'signal ignored', AbortSignal.timeout(10_000))).toMatchObject({ level: 'warn', signal: 'SIGTTIN', err: refusal });
    } finally {
      unhandle();
    }
    expect(w.worker.pool.size).toBe(MAX_POOL_SIZE);
  });

  it('requeues the running job when the worker stops', async () => {
    const w = await start({ TRAVIS_WORKER_PROVIDER_NAME: 'fake', TRAVIS_WORKER_FAKE_RUN_SLEEP: '1m' });
    const done = w.jobDone(43);
    await enqueue({ id: 43, script: 'true' });
    await fileAppears(join(queueDir('started'), '43.json'));
    const stopping = w.stop();
    expect((await done).result).toEqual({ outcome: 'requeued', cause: 'shutdown', instanceReady: true });
    await stopping;
    expect(await readdir(queueDir('created'))).toEqual(['43.json']);
  });
});
