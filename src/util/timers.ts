/**
 * The longest delay a Node.js timer can wait. `setTimeout`,
 * `AbortSignal.timeout` and `timers/promises` store the delay as a signed
 * 32-bit integer: anything longer is replaced by 1 ms (with only a
 * TimeoutOverflowWarning), so a 30-day timeout would fire at once. Every
 * duration the worker reads (settings and payload timeouts) is refused past
 * this bound, where it is read, naming its field.
 */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * `ms` as a timer can wait it. A duration the worker computes (a setting
 * plus a margin, a deadline minus now) can pass MAX_TIMER_MS even though
 * each part is within it; it waits MAX_TIMER_MS (about 24.8 days) instead of
 * firing at once. Below 0, or not a number, it is 0: due now.
 */
export function timerDelay(ms: number): number {
  if (!(ms > 0)) return 0;
  return Math.min(ms, MAX_TIMER_MS);
}

/** `AbortSignal.timeout` for a computed duration: aborts after `timerDelay(ms)`. */
export function timeoutSignal(ms: number): AbortSignal {
  return AbortSignal.timeout(timerDelay(ms));
}

/**
 * `setTimeout` for a job's deadlines. Its delays were checked against
 * MAX_TIMER_MS where they were read; this refuses one that slipped past
 * rather than let Node fire it at once, and names the deadline (`what`).
 */
export function startTimer(what: string, delayMs: number, callback: () => void): NodeJS.Timeout {
  if (!(delayMs >= 0 && delayMs <= MAX_TIMER_MS)) {
    throw new RangeError(`${what}: ${delayMs} ms is not a delay a timer can wait (0 to ${MAX_TIMER_MS} ms)`);
  }
  return setTimeout(callback, delayMs);
}
