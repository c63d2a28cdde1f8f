/**
 * TRAVIS_WORKER_MAX_JOBS through the pool: never more consumers open than
 * jobs left to take, so job N+1 is never delivered to this worker; the
 * budget says when the last job was taken. The queue is in memory: what
 * is checked is which sources the processors open, and when.
 */
import { once } from 'node:events';
import { afterEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/logger.js';
import { ProcessorPool } from '../../src/pool.js';
import type { JobQueue, JobSource, QueuedJob } from '../../src/queue/contract.js';

/** A queue of job ids in memory that counts the sources open, as a broker counts consumers. */
class MemoryQueue implements JobQueue {
  readonly name = 'memory';
  readonly waiting: number[];
  /** Sources open now, and the most open at once. */
  openSources = 0;
  mostOpen = 0;
  private readonly wakers = new Set<() => void>();

  constructor(jobs: number[]) {
    this.waiting = [...jobs];
  }

  async openSource(): Promise<JobSource> {
    this.openSources++;
    this.mostOpen = Math.max(this.mostOpen, this.openSources);
    const closed = new AbortController();
    return {
      next: async (signal) => {
        const stop = AbortSignal.any([signal, closed.signal]);
        while (!stop.aborted) {
          const jobId = this.waiting.shift();
          if (jobId !== undefined) return { payload: { jobId } } as QueuedJob;
          await new Promise<void>((resolve) => {
            this.wakers.add(resolve);
            stop.addEventListener('abort', () => resolve(), { once: true });
          });
        }
        return undefined;
      },
      close: async () => {
        if (closed.signal.aborted) return;
        closed.abort();
        this.openSources--;
      },
    };
  }

  publish(jobId: number): void {
    this.waiting.push(jobId);
    for (const wake of this.wakers) wake();
    this.wakers.clear();
  }

  async readyJobs(): Promise<number> {
    return this.waiting.length;
  }

  async open(): Promise<void> {}
  onCancel(): void {}
  notReadyReason(): undefined {
    return undefined;
  }
  onReadinessChange(): void {}
  async close(): Promise<void> {}
}

/** Resolves once `predicate` holds, looking again on each change of a processor. */
async function until(on: ProcessorPool, predicate: () => boolean): Promise<void> {
  while (!predicate()) await once(on, 'change');
}

let pool: ProcessorPool | undefined;
afterEach(async () => {
  await pool?.stop();
  pool = undefined;
});

/** A job runner whose jobs end when the test says. */
function heldJobs(): { run: (job: QueuedJob) => Promise<never>; started: number[]; finishAll: () => void } {
  const started: number[] = [];
  let finish!: () => void;
  const finished = new Promise<void>((resolve) => (finish = resolve));
  return {
    started,
    finishAll: () => finish(),
    run: async (job) => {
      started.push(job.payload.jobId);
      await finished;
      return { outcome: 'finished', state: 'passed' } as never;
    },
  };
}

describe('MAX_JOBS in the pool', () => {
  it('takes exactly N jobs with more processors than that, never opening more consumers than jobs left, and leaves the rest queued', async () => {
    const queue = new MemoryQueue([1, 2, 3, 4, 5]);
    const jobs = heldJobs();
    pool = new ProcessorPool(queue, jobs.run, silentLogger, 'test', 2);
    const spent = once(pool.budget, 'spent');
    await pool.grow(3);
    await spent;
    expect(jobs.started.sort()).toEqual([1, 2]);
    expect(queue.mostOpen).toBe(2);
    // Both consumers were closed as their jobs were taken, before those jobs ended.
    expect(queue.openSources).toBe(0);
    queue.publish(6);
    jobs.finishAll();
    await until(pool, () => pool?.processed === 2);
    expect(pool.size).toBe(0);
    expect(queue.waiting).toEqual([3, 4, 5, 6]);
    expect(queue.openSources).toBe(0);
  });

  it('with one job left, keeps one consumer open however large the pool', async () => {
    const queue = new MemoryQueue([]);
    const jobs = heldJobs();
    pool = new ProcessorPool(queue, jobs.run, silentLogger, 'test', 1);
    await pool.grow(4);
    expect(queue.openSources).toBe(1);
    expect(pool.size).toBe(1);
    queue.publish(7);
    queue.publish(8);
    await once(pool.budget, 'spent');
    jobs.finishAll();
    await until(pool, () => pool?.processed === 1);
    expect(jobs.started).toEqual([7]);
    expect(queue.waiting).toEqual([8]);
    expect(queue.mostOpen).toBe(1);
  });

  it('takes jobs without limit when MAX_JOBS is 0', async () => {
    const queue = new MemoryQueue([1, 2, 3]);
    const jobs = heldJobs();
    pool = new ProcessorPool(queue, jobs.run, silentLogger, 'test');
    await pool.grow(3);
    await until(pool, () => jobs.started.length === 3);
    expect(queue.openSources).toBe(3);
    jobs.finishAll();
  });
});
