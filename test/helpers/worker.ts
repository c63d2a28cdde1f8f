/**
 * Runs a whole worker in-process, configured through the same loader as
 * production (environment variables), and waits for its jobs by event.
 */
import { once } from 'node:events';
import { backends } from '../../backends/index.js';
import { loadConfig } from '../../src/config/load.js';
import type { WorkerConfig } from '../../src/config/types.js';
import { silentLogger, type Logger } from '../../src/logger.js';
import { startWorker } from '../../src/main.js';
import type { ProcessorStatus } from '../../src/processor.js';
import type { JobDone, Worker } from '../../src/worker.js';

export interface TestWorker {
  worker: Worker;
  config: WorkerConfig;
  /** Resolves with the first job-done event for `jobId` from now on. */
  jobDone(jobId: number): Promise<JobDone>;
  stop(): Promise<void>;
}

export async function startTestWorker(env: Record<string, string>, logger: Logger = silentLogger): Promise<TestWorker> {
  const config = loadConfig(backends, { TRAVIS_WORKER_INITIAL_SLEEP: '0s', TRAVIS_WORKER_HOSTNAME: 'test-worker', ...env });
  const worker = await startWorker(config, backends, logger);
  return {
    worker,
    config,
    async jobDone(jobId) {
      for (;;) {
        const [done] = (await once(worker.events, 'job-done')) as [JobDone];
        if (done.jobId === jobId) return done;
      }
    },
    stop: () => worker.stop(),
  };
}

/** Resolves with the first job-done event of `worker` for `jobId` from now on (its listener removed then). */
export function nextJobDone(worker: Worker, jobId: number): Promise<JobDone> {
  return new Promise((resolve) => {
    const listener = (done: JobDone): void => {
      if (done.jobId !== jobId) return;
      worker.events.off('job-done', listener);
      resolve(done);
    };
    worker.events.on('job-done', listener);
  });
}

/** Resolves once `predicate` holds for the worker's processors, checked on each of its `processor` events. */
export async function untilProcessors(worker: Worker, predicate: (processors: ProcessorStatus[]) => boolean, signal?: AbortSignal): Promise<void> {
  while (!predicate(worker.pool.status())) {
    signal?.throwIfAborted();
    await once(worker.events, 'processor', signal ? { signal } : {});
  }
}

/** Every processor is paused (none takes jobs). */
export const allPaused = (processors: ProcessorStatus[]): boolean => processors.every((processor) => processor.state === 'paused');

/** The `authorization` header value for `user:password` credentials. */
export const basicAuth = (credentials: string): string => `Basic ${Buffer.from(credentials).toString('base64')}`;

/** A request to `worker`'s control API: with `credentials` (none when null), and `body` sent as JSON (a string as it is). */
export function callControl(worker: Worker, credentials: string | null, method: string, path: string, body?: unknown): Promise<Response> {
  return fetch(`${worker.controlUrl}${path}`, {
    method,
    headers: { ...(credentials === null ? {} : { authorization: basicAuth(credentials) }), ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
  });
}
