/**
 * The warm pool's own rules, on the in-memory `fake` backend (machines that
 * boot in a few milliseconds): it never holds more than its size, never
 * hands out a machine whose lease the job would outlive, empties when jobs
 * stop coming (adaptive), and stops booting once the breaker opens.
 */
import { once } from 'node:events';
import { afterEach, describe, expect, it } from 'vitest';
import { definition as fake, type FakeSettings } from '../../backends/fake/index.js';
import { CircuitBreaker } from '../../src/backend/breaker.js';
import type { StartOptions } from '../../src/backend/contract.js';
import { loadConfig } from '../../src/config/load.js';
import { silentLogger } from '../../src/logger.js';
import type { WarmPoolMode } from '../../src/warm-pool/demand.js';
import { WARM_JOB_ID, WarmPool } from '../../src/warm-pool/pool.js';
import { testAttributes } from '../helpers/attributes.js';
import { testBackendContext } from '../helpers/backend-context.js';

const HOUR = 3_600_000;
const MINUTE = 60_000;

interface Made {
  pool: WarmPool;
  breaker: CircuitBreaker;
  /** Starts the pool asked the backend for (its own boots and jobs' cold starts). */
  starts: () => number;
}

const made: Made[] = [];
afterEach(async () => {
  for (const { pool, breaker } of made.splice(0)) {
    await pool.close();
    breaker.dispose();
  }
});

function makePool(
  options: { size?: number; mode?: WarmPoolMode; windowMs?: number; fakeEnv?: Record<string, string>; threshold?: number } = {},
): Made {
  const config = loadConfig([fake], { TRAVIS_WORKER_PROVIDER_NAME: 'fake', TRAVIS_WORKER_FAKE_STARTUP_DURATION: '20ms', ...options.fakeEnv });
  const backend = fake.create(config.backendSettings as unknown as FakeSettings, testBackendContext());
  const { shape } = backend;
  if (shape === undefined) throw new Error('the fake backend tells no shapes');
  let starts = 0;
  const breaker = new CircuitBreaker({ threshold: options.threshold ?? 5, backoffMs: HOUR, maxBackoffMs: HOUR, logger: silentLogger });
  const pool = new WarmPool({
    backend: {
      start: (attributes, startOptions) => {
        starts += 1;
        return backend.start(attributes, startOptions);
      },
      close: () => backend.close(),
      shape,
    },
    size: options.size ?? 1,
    mode: options.mode ?? 'fixed',
    maxAgeMs: HOUR,
    windowMs: options.windowMs ?? HOUR,
    hardTimeoutMs: 10 * MINUTE,
    bootTimeoutMs: MINUTE,
    defaults: testAttributes({ jobId: WARM_JOB_ID }),
    breaker,
    logger: silentLogger,
    metrics: { hit() {}, miss() {}, left() {}, bootFailed() {} },
    recordPhase: () => {},
    bootRetryMs: 10,
  });
  const result = { pool, breaker, starts: () => starts };
  made.push(result);
  return result;
}

const jobOptions = (): StartOptions => ({ signal: AbortSignal.timeout(10_000), progress: () => {}, logger: silentLogger, recordPhase: () => {} });
const held = (pool: WarmPool): number => pool.status().shapes.reduce((sum, shape) => sum + shape.idle.length + shape.booting, 0);
const idle = (pool: WarmPool): number => pool.status().shapes.reduce((sum, shape) => sum + shape.idle.length, 0);

async function untilIdle(pool: WarmPool, count: number): Promise<void> {
  while (idle(pool) < count) await once(pool.events, 'ready', { signal: AbortSignal.timeout(10_000) });
}

describe('the warm pool', () => {
  it('never holds more than its size, idle and booting together', async () => {
    const { pool, starts } = makePool({ size: 3 });
    let most = 0;
    const watch = (): void => void (most = Math.max(most, held(pool)));
    pool.events.on('reconciled', watch);
    pool.events.on('ready', watch);
    await pool.fill();
    await untilIdle(pool, 3);
    expect(most).toBe(3);
    expect(starts()).toBe(3);
  });

  it('gives a job whose hard limit would outlive a warm machine\'s lease a cold start', async () => {
    const { pool } = makePool();
    await pool.fill();
    await untilIdle(pool, 1);
    // The lease covers the pool's age limit (1 h) plus the worker's hard timeout (10 min) from the boot.
    const long = await pool.start(testAttributes({ jobId: 1, hardTimeoutMs: 2 * HOUR }), jobOptions());
    expect(idle(pool)).toBe(1);
    const usual = await pool.start(testAttributes({ jobId: 2, hardTimeoutMs: 10 * MINUTE }), jobOptions());
    expect(pool.status()).toMatchObject({ hits: 1, misses: 1 });
    await Promise.all([long.destroy(), usual.destroy()]);
  });

  it('adaptive: keeps ready the shape a job asked for, and is empty one window after the last job', async () => {
    const { pool } = makePool({ size: 2, mode: 'adaptive', windowMs: 300 });
    await pool.fill();
    expect(pool.status().shapes).toEqual([]);
    const ready = once(pool.events, 'ready');
    const job = await pool.start(testAttributes({ jobId: 1, vmSize: 'large' }), jobOptions());
    await job.destroy();
    const [, shape] = await ready;
    expect(shape).toBe('image=fake vm_size=large');
    const [, reason] = await once(pool.events, 'evicted', { signal: AbortSignal.timeout(10_000) });
    expect(reason).toBe('surplus');
    expect(pool.status().shapes).toEqual([]);
  });

  it('counts a failed boot as a failed start, and boots no more once the breaker opens', async () => {
    const { pool, breaker, starts } = makePool({ threshold: 2, fakeEnv: { TRAVIS_WORKER_FAKE_FAIL_START: 'true' } });
    const opened = once(breaker, 'open');
    await pool.fill();
    await opened;
    await pool.drain();
    expect(starts()).toBe(2);
    expect(breaker.state).toBe('open');
  });
});
