/**
 * The warm pool's demand arithmetic: how many instances of each shape the
 * fixed and adaptive pools keep, from the jobs seen.
 */
import { describe, expect, it } from 'vitest';
import { Demand, MAX_SHAPES, apportion } from '../../src/warm-pool/demand.js';

const MINUTE = 60_000;
const counts = (targets: Map<string, { count: number }>): Record<string, number> =>
  Object.fromEntries([...targets].map(([key, target]) => [key, target.count]));

describe('apportion', () => {
  it('splits a total in proportion, the counts adding up to it exactly', () => {
    const split = apportion(new Map([['a', 5], ['b', 3], ['c', 2]]), 10, 4);
    expect(Object.fromEntries(split)).toEqual({ a: 2, b: 1, c: 1 });
    expect([...split.values()].reduce((x, y) => x + y)).toBe(4);
  });

  it('gives nothing when there is no weight or nothing to give', () => {
    expect(apportion(new Map([['a', 1]]), 1, 0).size).toBe(0);
    expect(apportion(new Map(), 0, 3).size).toBe(0);
  });
});

describe('fixed demand', () => {
  it('always keeps the whole size, shared by every job seen since start', () => {
    const demand = new Demand<string>('fixed', MINUTE);
    expect(demand.targets(4, 0).size).toBe(0);
    demand.record('small', 'small-template', 0);
    expect(counts(demand.targets(4, 0))).toEqual({ small: 4 });
    for (let i = 0; i < 3; i++) demand.record('large', 'large-template', 1);
    // Hours later nothing has faded.
    expect(counts(demand.targets(4, 10 * 60 * MINUTE))).toEqual({ small: 1, large: 3 });
    expect(demand.targets(4, 0).get('large')?.template).toBe('large-template');
  });
});

describe('adaptive demand', () => {
  it('keeps as many as jobs came within the window, fading linearly to none one window after the last', () => {
    const demand = new Demand<string>('adaptive', 10 * MINUTE);
    for (let i = 0; i < 3; i++) demand.record('a', 'ta', 0);
    demand.record('b', 'tb', 0);
    expect(counts(demand.targets(8, 0))).toEqual({ a: 3, b: 1 });
    // Capped by the size, still in proportion.
    expect(counts(demand.targets(2, 0))).toEqual({ a: 2 });
    // Half a window on, each job counts one half: 2 instances in all.
    expect(counts(demand.targets(8, 5 * MINUTE))).toEqual({ a: 2 });
    expect(counts(demand.targets(8, 10 * MINUTE - 1))).toEqual({ a: 1 });
    expect(demand.targets(8, 10 * MINUTE).size).toBe(0);
    // Shapes whose jobs all left the window are forgotten.
    expect(demand.shapes()).toEqual([]);
  });

  it('follows a change of mix: the shape asked for lately gets the instances', () => {
    const demand = new Demand<string>('adaptive', 10 * MINUTE);
    for (let i = 0; i < 4; i++) demand.record('old', 'to', i);
    for (let i = 0; i < 4; i++) demand.record('new', 'tn', 5 * MINUTE);
    // Half a window on, the old jobs count half as much as the new ones.
    expect(counts(demand.targets(4, 5 * MINUTE))).toEqual({ old: 1, new: 3 });
  });

  it('moves the demand of a shape whose image changed to its new shape', () => {
    const demand = new Demand<string>('adaptive', 10 * MINUTE);
    demand.record('image=v1', 't', 0);
    demand.record('image=v2', 't', 0);
    demand.rename('image=v1', 'image=v2');
    expect(counts(demand.targets(4, 0))).toEqual({ 'image=v2': 2 });
  });

  it(`tracks at most ${MAX_SHAPES} shapes, forgetting the one least asked for`, () => {
    const demand = new Demand<string>('adaptive', 10 * MINUTE);
    demand.record('busy', 't', 0);
    demand.record('busy', 't', 0);
    for (let i = 0; i < MAX_SHAPES; i++) demand.record(`rare-${i}`, 't', i);
    const shapes = demand.shapes().map(([key]) => key);
    expect(shapes).toHaveLength(MAX_SHAPES);
    expect(shapes).toContain('busy');
    expect(shapes).not.toContain('rare-0');
  });
});
