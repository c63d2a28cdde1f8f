/**
 * The circuit breaker's decisions: when it opens, how its backoff grows,
 * when it half-opens and closes. Backoffs are a few milliseconds here and
 * the tests wait for the breaker's events, never for time.
 */
import { once } from 'node:events';
import { afterEach, describe, expect, it } from 'vitest';
import { BACKOFF_JITTER, CircuitBreaker, backoffFor, isStartFailure, type BreakerOpened } from '../../src/backend/breaker.js';
import type { JobResult, RequeueCause } from '../../src/job/outcome.js';
import { silentLogger } from '../../src/logger.js';

let breaker: CircuitBreaker | undefined;
afterEach(() => breaker?.dispose());

function make(threshold: number, backoffMs = 1, maxBackoffMs = 8): CircuitBreaker {
  breaker = new CircuitBreaker({ threshold, backoffMs, maxBackoffMs, logger: silentLogger, random: () => 0 });
  return breaker;
}

describe('backoffFor', () => {
  it('doubles from the first backoff up to the maximum', () => {
    const options = { backoffMs: 30_000, maxBackoffMs: 600_000 };
    expect([1, 2, 3, 4, 5, 6, 40].map((opening) => backoffFor(opening, options, 0))).toEqual([
      30_000, 60_000, 120_000, 240_000, 480_000, 600_000, 600_000,
    ]);
  });

  it('takes up to BACKOFF_JITTER off the step, never adds to it', () => {
    const options = { backoffMs: 30_000, maxBackoffMs: 600_000 };
    expect(backoffFor(1, options, 0.999_999)).toBe(Math.round(30_000 * (1 - BACKOFF_JITTER * 0.999_999)));
    expect(backoffFor(10, options, 0.5)).toBe(600_000 * (1 - BACKOFF_JITTER / 2));
  });
});

describe('isStartFailure', () => {
  const requeued = (cause: RequeueCause, instanceReady = false): JobResult => ({ outcome: 'requeued', cause, instanceReady });
  const startCauses: RequeueCause[] = ['E_SCRIPT_UNAVAILABLE', 'E_INSTANCE_START', 'E_NO_CAPACITY', 'E_STARTUP_TIMEOUT', 'E_SSH_UNREACHABLE', 'E_UPLOAD', 'E_UPLOAD_TIMEOUT', 'E_STALE_VM'];

  it('counts a requeue for a failure to get the script or bring up an instance, not a lost run, the broker, a bug or a stop', () => {
    const otherCauses: RequeueCause[] = ['E_CONNECTION_LOST', 'E_BROKER', 'E_UNEXPECTED', 'shutdown', 'log-undeliverable'];
    expect(startCauses.map((cause) => requeued(cause)).filter(isStartFailure)).toEqual(startCauses.map((cause) => requeued(cause)));
    expect(otherCauses.map((cause) => requeued(cause)).filter(isStartFailure)).toEqual([]);
  });

  it('counts a start failure only before the instance was ready: once it took its script, the start worked', () => {
    expect(startCauses.map((cause) => isStartFailure(requeued(cause, false)))).toEqual(startCauses.map(() => true));
    expect(startCauses.map((cause) => isStartFailure(requeued(cause, true)))).toEqual(startCauses.map(() => false));
  });

  it('never counts a finished or abandoned run', () => {
    const ends: JobResult[] = [
      { outcome: 'finished', state: 'errored' },
      { outcome: 'abandoned', cause: 'delivery-lost' },
      { outcome: 'abandoned', cause: 'report failed' },
    ];
    expect(ends.filter(isStartFailure)).toEqual([]);
  });
});

describe('CircuitBreaker', () => {
  it('opens after the threshold of failures in a row, not before', () => {
    const b = make(3, 60_000, 60_000);
    const opened: BreakerOpened[] = [];
    b.on('open', (event) => opened.push(event));
    b.recordFailure('E_INSTANCE_START');
    b.recordFailure('E_INSTANCE_START');
    expect(b.state).toBe('closed');
    expect(b.reason()).toBeUndefined();
    b.recordFailure('E_NO_CAPACITY');
    expect(b.state).toBe('open');
    expect(opened).toEqual([{ failures: 3, trialFailed: false, lastCode: 'E_NO_CAPACITY', backoffMs: 60_000, openings: 1 }]);
    expect(b.reason()).toMatch(/jobs failed to start 3 times in a row \(last: E_NO_CAPACITY\): circuit breaker open, trying one job again in 60s/);
  });

  it('starts counting again after a working start', () => {
    const b = make(2);
    b.recordFailure('E_INSTANCE_START');
    b.recordSuccess();
    b.recordFailure('E_INSTANCE_START');
    expect(b.state).toBe('closed');
    expect(b.consecutiveFailures).toBe(1);
  });

  it('half-opens after the backoff; a working start closes it', async () => {
    const b = make(1);
    const halfOpen = once(b, 'half-open');
    b.recordFailure('E_INSTANCE_START');
    await halfOpen;
    expect(b.state).toBe('half-open');
    expect(b.reason()).toMatch(/half-open, trying one job/);
    const closed = once(b, 'close');
    b.recordSuccess();
    await closed;
    expect(b.state).toBe('closed');
    expect(b.consecutiveFailures).toBe(0);
  });

  it('reopens for twice as long when the trial fails, and starts over from the first backoff once closed', async () => {
    const b = make(2, 2, 100);
    const opened: BreakerOpened[] = [];
    b.on('open', (event) => opened.push(event));
    b.recordFailure('E_INSTANCE_START');
    b.recordFailure('E_INSTANCE_START');
    await once(b, 'half-open');
    b.recordFailure('E_UPLOAD');
    expect(b.state).toBe('open');
    await once(b, 'half-open');
    b.recordFailure('E_UPLOAD');
    await once(b, 'half-open');
    b.recordSuccess();
    b.recordFailure('E_INSTANCE_START');
    b.recordFailure('E_INSTANCE_START');
    expect(opened.map(({ backoffMs, openings, trialFailed }) => ({ backoffMs, openings, trialFailed }))).toEqual([
      { backoffMs: 2, openings: 1, trialFailed: false },
      { backoffMs: 4, openings: 2, trialFailed: true },
      { backoffMs: 8, openings: 3, trialFailed: true },
      { backoffMs: 2, openings: 1, trialFailed: false },
    ]);
  });

  it('ignores what jobs started before it opened report while it is open', () => {
    const b = make(1, 60_000, 60_000);
    b.recordFailure('E_INSTANCE_START');
    b.recordSuccess();
    b.recordFailure('E_INSTANCE_START');
    expect([b.state, b.consecutiveFailures]).toEqual(['open', 1]);
  });

  it('never opens with a threshold of 0', () => {
    const b = make(0);
    for (let i = 0; i < 100; i++) b.recordFailure('E_INSTANCE_START');
    expect(b.state).toBe('closed');
  });
});
