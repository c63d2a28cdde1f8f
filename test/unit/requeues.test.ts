import { describe, expect, it } from 'vitest';
import { RequeueCounter } from '../../src/job/requeues.js';

describe('RequeueCounter', () => {
  it('admits `limit` requeues of a job in a row, then refuses the next and starts again from one', () => {
    const counter = new RequeueCounter(2);
    expect([counter.admit(7), counter.admit(7), counter.admit(7)]).toEqual([true, true, false]);
    expect(counter.admit(7)).toBe(true);
  });

  it('counts each job on its own, and from one again once the job finished', () => {
    const counter = new RequeueCounter(1);
    expect(counter.admit(1)).toBe(true);
    expect(counter.admit(2)).toBe(true);
    counter.settled(1, { outcome: 'finished', state: 'passed' });
    expect(counter.admit(1)).toBe(true);
    expect(counter.admit(2)).toBe(false);
  });

  it('keeps counting across runs that were requeued or abandoned', () => {
    const counter = new RequeueCounter(2);
    expect(counter.admit(5)).toBe(true);
    counter.settled(5, { outcome: 'requeued', cause: 'E_INSTANCE_START', instanceReady: false });
    counter.settled(5, { outcome: 'abandoned', cause: 'delivery-lost' });
    expect(counter.admit(5)).toBe(true);
    expect(counter.admit(5)).toBe(false);
  });

  it('never refuses with a limit of 0', () => {
    const counter = new RequeueCounter(0);
    expect(Array.from({ length: 50 }, () => counter.admit(3)).every(Boolean)).toBe(true);
  });

  it('keeps at most maxEntries jobs, forgetting the oldest first', () => {
    const counter = new RequeueCounter(1, 2);
    counter.admit(1);
    counter.admit(2);
    counter.admit(3);
    expect(counter.admit(1)).toBe(true);
    expect(counter.admit(3)).toBe(false);
  });
});
