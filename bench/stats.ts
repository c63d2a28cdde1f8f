/**
 * Clocks and summary statistics shared by the scenarios.
 *
 * Latencies are measured on the wall clock in microseconds because some of
 * their ends are stamped by other processes (a job's script, the log
 * generator): `performance.timeOrigin + performance.now()` is the same
 * CLOCK_REALTIME those processes read, with sub-millisecond resolution.
 */

/** Now, in microseconds since the epoch (fractional). */
export function wallUs(): number {
  return (performance.timeOrigin + performance.now()) * 1000;
}

/** A distribution's summary; every duration in milliseconds. */
export interface Summary {
  n: number;
  p50: number;
  p99: number;
  mean: number;
  min: number;
  max: number;
}

/** Nearest-rank percentile of ascending `sorted` (`q` in 0..1). */
export function percentile(sorted: ArrayLike<number>, q: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[rank] as number;
}

/** Summarise `values` (not modified). */
export function summarize(values: ArrayLike<number>): Summary {
  const sorted = Float64Array.from(values).sort();
  let sum = 0;
  for (const value of sorted) sum += value;
  return {
    n: sorted.length,
    p50: percentile(sorted, 0.5),
    p99: percentile(sorted, 0.99),
    mean: sorted.length === 0 ? Number.NaN : sum / sorted.length,
    min: sorted.length === 0 ? Number.NaN : (sorted[0] as number),
    max: sorted.length === 0 ? Number.NaN : (sorted[sorted.length - 1] as number),
  };
}

/** `value` with `digits` decimals, or `n/a`. */
export function fixed(value: number, digits = 1): string {
  return Number.isFinite(value) ? value.toFixed(digits) : 'n/a';
}

/** `p50 1.2 ms · p99 3.4 ms`. */
export function formatLatency(summary: Summary): string {
  return `p50 ${fixed(summary.p50, 2)} ms · p99 ${fixed(summary.p99, 2)} ms (n=${summary.n})`;
}
