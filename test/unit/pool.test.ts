/**
 * The pool's size cap: one bound, however the pool is resized (the control
 * API, signals and POOL_SIZE all come through here or through config).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { LifecycleError } from '../../src/lifecycle/state.js';
import { silentLogger } from '../../src/logger.js';
import { MAX_POOL_SIZE, PoolLimitError, ProcessorPool } from '../../src/pool.js';
import type { JobQueue, JobSource } from '../../src/queue/contract.js';

/** A queue that never has a job: each source waits until it is closed or its signal aborts. */
function emptyQueue(): JobQueue {
  return {
    name: 'empty',
    open: async () => {},
    openSource: async (): Promise<JobSource> => {
      const closed = new AbortController();
      return {
        next: (signal) =>
          new Promise((resolve) => {
            const stop = AbortSignal.any([signal, closed.signal]);
            if (stop.aborted) resolve(undefined);
            else stop.addEventListener('abort', () => resolve(undefined), { once: true });
          }),
        close: async () => closed.abort(),
      };
    },
    onCancel: () => {},
    notReadyReason: () => undefined,
    readyJobs: async () => 0,
    onReadinessChange: () => {},
    close: async () => {},
  };
}

let pool: ProcessorPool | undefined;
afterEach(async () => {
  await pool?.stop();
  pool = undefined;
});

describe('ProcessorPool size cap', () => {
  // Unbounded increments opened channels past the broker's channel_max: processors died and state updates failed.
  it(`grows to MAX_POOL_SIZE (${MAX_POOL_SIZE}) and refuses every growth past it, staying at its size`, async () => {
    pool = new ProcessorPool(emptyQueue(), () => Promise.reject(new Error('no job is ever taken')), silentLogger, 'test');
    await pool.resize(MAX_POOL_SIZE);
    expect(pool.size).toBe(MAX_POOL_SIZE);
    await expect(pool.grow(1)).rejects.toThrow(PoolLimitError);
    await expect(pool.resize(MAX_POOL_SIZE + 1)).rejects.toThrow(`the pool cannot grow to ${MAX_POOL_SIZE + 1} processors: ${MAX_POOL_SIZE} at most`);
    // Refused as a lifecycle refusal is: 409 from the control API, a warning for a signal.
    await expect(pool.grow(1)).rejects.toBeInstanceOf(LifecycleError);
    expect(pool.size).toBe(MAX_POOL_SIZE);
    pool.shrink(1);
    await pool.grow(1);
    expect(pool.size).toBe(MAX_POOL_SIZE);
  });
});
