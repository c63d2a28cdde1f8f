import { describe, expect, it } from 'vitest';
import { CancelRegistry } from '../../src/job/cancels.js';
import type { CancelCommand } from '../../src/queue/contract.js';

const cancel = (jobId: number, reason = 'cancelled by user'): CancelCommand => ({ jobId, reason, source: 'api' });

describe('CancelRegistry', () => {
  it('delivers a cancel to the running job it names', () => {
    const registry = new CancelRegistry();
    const got: CancelCommand[] = [];
    registry.subscribe(1, (c) => got.push(c));
    expect(registry.cancel(cancel(1))).toBe('delivered');
    expect(registry.cancel(cancel(2))).toBe('remembered');
    expect(got).toEqual([cancel(1)]);
  });

  it('applies a cancel that came before the job, once', () => {
    const registry = new CancelRegistry();
    registry.cancel(cancel(5, 'too late'));
    const got: CancelCommand[] = [];
    registry.subscribe(5, (c) => got.push(c))();
    registry.subscribe(5, (c) => got.push(c));
    expect(got).toEqual([cancel(5, 'too late')]);
  });

  it('forgets cancels after the memory time', () => {
    let now = 0;
    const registry = new CancelRegistry(1000, 10, () => now);
    registry.cancel(cancel(1));
    now = 1001;
    const got: CancelCommand[] = [];
    registry.subscribe(1, (c) => got.push(c));
    expect(got).toEqual([]);
  });

  it('keeps at most the configured number of cancels, dropping the oldest', () => {
    const registry = new CancelRegistry(60_000, 3);
    for (let id = 1; id <= 5; id++) registry.cancel(cancel(id));
    expect(registry.rememberedCount).toBe(3);
    const got: number[] = [];
    for (let id = 1; id <= 5; id++) registry.subscribe(id, (c) => got.push(c.jobId));
    expect(got).toEqual([3, 4, 5]);
  });

  it('stops delivering after unsubscribe', () => {
    const registry = new CancelRegistry();
    const got: CancelCommand[] = [];
    const unsubscribe = registry.subscribe(1, (c) => got.push(c));
    unsubscribe();
    expect(registry.cancel(cancel(1))).toBe('remembered');
    expect(got).toEqual([]);
  });
});
