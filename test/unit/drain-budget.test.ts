import { describe, expect, it } from 'vitest';
import { drainBudgetMs } from '../../src/lifecycle/drain-budget.js';

describe('drainBudgetMs', () => {
  const now = 1_000_000;
  const shutdownMs = 45 * 60_000;

  it('is the shutdown timeout without a notice', () => {
    expect(drainBudgetMs(shutdownMs, undefined, now)).toBe(shutdownMs);
  });

  it('is what the notice leaves less the margin: 100 s of a spot notice with the default 20 s margin', () => {
    expect(drainBudgetMs(shutdownMs, { at: now + 120_000, marginMs: 20_000 }, now)).toBe(100_000);
  });

  it('is never more than the shutdown timeout', () => {
    expect(drainBudgetMs(30_000, { at: now + 120_000, marginMs: 20_000 }, now)).toBe(30_000);
  });

  it('is 0 (requeue at once) when the deadline is nearer than the margin, or past', () => {
    expect(drainBudgetMs(shutdownMs, { at: now + 10_000, marginMs: 20_000 }, now)).toBe(0);
    expect(drainBudgetMs(shutdownMs, { at: now - 5_000, marginMs: 20_000 }, now)).toBe(0);
  });
});
