/**
 * Runs a whole worker in-process, configured through the same loader as
 * production (environment variables), and waits for its jobs by event.
 */
import { once } from 'node:events';
import { backends } from '../../backends/index.js';
import { loadConfig } from '../../src/config.js';
import type { WorkerConfig } from '../../src/config.js';
import { silentLogger, type Logger } from '../../src/logger.js';
import { startWorker, type JobDone, type Worker } from '../../src/main.js';

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
