import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { abortableSleep } from '../../src/util/abort.js';
import { MAX_TIMER_MS, timeoutSignal, timerDelay } from '../../src/util/timers.js';

/** A delay a timer would overflow: what a grace period at its maximum plus a margin adds up to. */
const PAST_MAX_MS = MAX_TIMER_MS + 30_000;

/**
 * Resolves after a short timer set now. Node.js runs timers in the order
 * they are due, and an overflowed delay is due after 1 ms: one made before
 * this has fired by the time it resolves.
 */
const afterAnOverflowWouldHaveFired = (): Promise<void> => sleep(5);

describe('timerDelay', () => {
  it('keeps a delay a timer can wait, cuts a longer one to MAX_TIMER_MS, and makes a negative or missing one due now', () => {
    expect(timerDelay(1500)).toBe(1500);
    expect(timerDelay(MAX_TIMER_MS)).toBe(MAX_TIMER_MS);
    expect(timerDelay(PAST_MAX_MS)).toBe(MAX_TIMER_MS);
    expect(timerDelay(Number.POSITIVE_INFINITY)).toBe(MAX_TIMER_MS);
    expect(timerDelay(-20)).toBe(0);
    expect(timerDelay(Number.NaN)).toBe(0);
  });
});

describe('timeoutSignal', () => {
  it('does not abort at once for a computed duration past MAX_TIMER_MS', async () => {
    const signal = timeoutSignal(PAST_MAX_MS);
    await afterAnOverflowWouldHaveFired();
    expect(signal.aborted).toBe(false);
  });

  it('aborts with a TimeoutError once a short duration passed', async () => {
    const signal = timeoutSignal(1);
    await new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }));
    expect((signal.reason as Error).name).toBe('TimeoutError');
  });
});

describe('abortableSleep', () => {
  it('does not wake at once for a computed duration past MAX_TIMER_MS, and still ends when its signal aborts', async () => {
    const controller = new AbortController();
    let woke = false;
    const sleeping = abortableSleep(PAST_MAX_MS, controller.signal).then(() => (woke = true));
    await afterAnOverflowWouldHaveFired();
    expect(woke).toBe(false);
    controller.abort(new Error('stop'));
    await expect(sleeping).rejects.toThrow('stop');
  });
});
