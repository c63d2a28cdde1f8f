/**
 * A worker killed with SIGKILL in the middle of a job (`kill -9`, the OOM
 * killer, power loss), as the reaper tests need one: bin/mayfly.ts run from
 * the sources in a process of its own, on a file queue, given one job that
 * sleeps, and killed once that job has started. What its backend made for
 * the job is left behind, for the next worker of the same name to find.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { STAGES } from '../../src/queue/file/layout.js';
import { fileAppears } from './files.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/** The killed worker's job: id 1, running long enough never to end by itself. */
export const KILLED_JOB_ID = 1;

/** A worker process and what it was configured with. */
export interface WorkerProcess {
  child: ChildProcess;
  /** Its environment, file queue included: a successor started with it takes over the same queue and name. */
  env: Record<string, string>;
}

/** Kill `worker` with SIGKILL if it still runs, and wait for it to be gone (for a test's cleanup). */
export async function killWorkerProcess(worker: WorkerProcess | undefined): Promise<void> {
  const child = worker?.child;
  if (child && child.exitCode === null && child.signalCode === null) {
    child.kill('SIGKILL');
    await once(child, 'exit');
  }
}

/** A worker process on a file queue under `base`, and what to watch it with. */
interface SpawnedWorker {
  worker: WorkerProcess;
  /** The file queue's directory. */
  queue: string;
  /** Rejects, with the worker's stderr, if it exits. */
  exited: Promise<never>;
}

/** Start bin/mayfly.ts from the sources, named `hostname`, on a file queue under `base`, its reaper off. */
async function spawnWorker(
  base: string,
  hostname: string,
  backendEnv: Record<string, string>,
  track: (worker: WorkerProcess) => void,
): Promise<SpawnedWorker> {
  const queue = join(base, 'queue');
  for (const stage of Object.values(STAGES)) await mkdir(join(queue, 'builds', stage), { recursive: true });
  const env = {
    TRAVIS_WORKER_QUEUE_TYPE: 'file',
    TRAVIS_WORKER_BASE_DIR: queue,
    TRAVIS_WORKER_FILE_ECHO_LOGS: 'false',
    TRAVIS_WORKER_HOSTNAME: hostname,
    TRAVIS_WORKER_INITIAL_SLEEP: '0s',
    ...backendEnv,
  };
  // The worker as it runs in production (bin/mayfly.ts), from the sources.
  const child = spawn(process.execPath, ['--import', join(ROOT, 'test/helpers/ts-loader.mjs'), join(ROOT, 'bin/mayfly.ts')], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env, TRAVIS_WORKER_REAPER_INTERVAL: '0' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const worker = { child, env };
  track(worker);
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const exited = once(child, 'exit').then(() => {
    throw new Error(`the worker exited before it was killed:\n${stderr}`);
  });
  exited.catch(() => undefined);
  return { worker, queue, exited };
}

/** Kill a spawned worker with SIGKILL once `moment` has come (or fail if it exits first). */
async function killAt(spawned: SpawnedWorker, moment: Promise<unknown>): Promise<WorkerProcess> {
  await Promise.race([moment, spawned.exited]);
  spawned.worker.child.kill('SIGKILL');
  await once(spawned.worker.child, 'exit').catch(() => undefined);
  return spawned.worker;
}

/**
 * Start a worker named `hostname` with `env` (its backend's settings) on a
 * file queue under `base`, give it a job, and kill it with SIGKILL as soon
 * as the job has started. `track` receives the process at once, so the test
 * can clean up whatever happens here.
 */
export async function killWorkerMidJob(
  base: string,
  hostname: string,
  backendEnv: Record<string, string>,
  track: (worker: WorkerProcess) => void,
): Promise<WorkerProcess> {
  const spawned = await spawnWorker(base, hostname, backendEnv, track);
  const started = fileAppears(join(spawned.queue, 'builds', STAGES.started, `${KILLED_JOB_ID}.json`));
  await writeFile(
    join(spawned.queue, 'builds', STAGES.created, `${KILLED_JOB_ID}.json`),
    JSON.stringify({
      type: 'test',
      job: { id: KILLED_JOB_ID, number: '1.1' },
      repository: { id: 1, slug: 'octo/repo' },
      config: { language: 'shell', script: 'sleep 300' },
      timeouts: {},
    }),
  );
  return killAt(spawned, started);
}

/**
 * Start a worker as `killWorkerMidJob` does, with no job, and kill it with
 * SIGKILL once `moment` (given the process) has come: e.g. once its warm
 * pool has made instances.
 */
export async function killWorkerWhen(
  base: string,
  hostname: string,
  backendEnv: Record<string, string>,
  moment: Promise<unknown>,
  track: (worker: WorkerProcess) => void,
): Promise<WorkerProcess> {
  return killAt(await spawnWorker(base, hostname, backendEnv, track), moment);
}
