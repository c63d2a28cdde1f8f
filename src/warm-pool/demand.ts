/**
 * How many warm instances of each shape the pool should keep: the demand
 * side of the warm pool, pure arithmetic over the jobs seen (no clock of
 * its own, no I/O), so it is tested on its own.
 *
 * - `fixed`: always `size` instances, shared among the shapes in proportion
 *   to every job seen since start (seeded with the shape a job with the
 *   worker's defaults gets, so the pool is warm before the first job).
 * - `adaptive`: each job counts 1 for its shape when it arrives, falling
 *   linearly to 0 over `windowMs`; the pool keeps `ceil(sum)` instances (at
 *   most `size`), shared in proportion to each shape's sum. A job stops
 *   counting after the window, so when no jobs come the pool is empty one
 *   window after the last one.
 */

export type WarmPoolMode = 'fixed' | 'adaptive';

/**
 * Shapes tracked at most; the one least in demand is forgotten to make room.
 * Each shape is a label value in metrics, so this also bounds their series.
 */
export const MAX_SHAPES = 16;
/**
 * Arrival times kept per shape (adaptive mode). A window with more arrivals
 * already asks for more instances than any pool size holds, so older ones
 * change nothing but the proportions among very busy shapes.
 */
export const MAX_ARRIVALS_PER_SHAPE = 1_000;

/** One shape's demand: what to boot it from, and the jobs that asked for it. */
interface ShapeDemand<T> {
  template: T;
  /** Fixed mode: jobs since start. */
  count: number;
  /** Adaptive mode: arrival times (ms since the epoch), oldest first. */
  arrivals: number[];
}

/** How many instances of one shape to keep, and what to boot them from. */
export interface ShapeTarget<T> {
  count: number;
  template: T;
}

export class Demand<T> {
  readonly #shapes = new Map<string, ShapeDemand<T>>();

  constructor(
    readonly mode: WarmPoolMode,
    /** Adaptive mode: how long a job keeps counting, in ms. */
    readonly windowMs: number,
  ) {}

  /** A job of shape `key` arrived at `now`; `template` is what a machine of that shape is booted from. */
  record(key: string, template: T, now: number): void {
    let shape = this.#shapes.get(key);
    if (shape === undefined) {
      if (this.#shapes.size >= MAX_SHAPES) this.#forgetLeastWanted(now);
      shape = { template, count: 0, arrivals: [] };
      this.#shapes.set(key, shape);
    }
    shape.template = template;
    shape.count += 1;
    shape.arrivals.push(now);
    if (shape.arrivals.length > MAX_ARRIVALS_PER_SHAPE) shape.arrivals.shift();
  }

  /** The shapes tracked, with the template each is booted from. */
  shapes(): [key: string, template: T][] {
    return [...this.#shapes].map(([key, shape]) => [key, shape.template]);
  }

  /**
   * Shape `from` now resolves to `to` (its image changed): the demand moves
   * there, merged with what `to` already had.
   */
  rename(from: string, to: string): void {
    const moving = this.#shapes.get(from);
    if (moving === undefined || from === to) return;
    this.#shapes.delete(from);
    const existing = this.#shapes.get(to);
    if (existing === undefined) {
      this.#shapes.set(to, moving);
      return;
    }
    existing.count += moving.count;
    existing.arrivals = [...existing.arrivals, ...moving.arrivals].sort((a, b) => a - b).slice(-MAX_ARRIVALS_PER_SHAPE);
  }

  /** Instances to keep per shape at `now` (shapes with none left out), `size` at most in all. */
  targets(size: number, now: number): Map<string, ShapeTarget<T>> {
    const weights = new Map<string, number>();
    for (const [key, shape] of this.#shapes) {
      const weight = this.#weight(shape, now);
      if (weight > 0) weights.set(key, weight);
      else if (this.mode === 'adaptive') this.#shapes.delete(key); // its last job left the window
    }
    const sum = [...weights.values()].reduce((a, b) => a + b, 0);
    const total = this.mode === 'fixed' ? size : Math.min(size, Math.ceil(sum - 1e-9));
    const targets = new Map<string, ShapeTarget<T>>();
    for (const [key, count] of apportion(weights, sum, total)) {
      const shape = this.#shapes.get(key);
      if (shape !== undefined && count > 0) targets.set(key, { count, template: shape.template });
    }
    return targets;
  }

  #weight(shape: ShapeDemand<T>, now: number): number {
    if (this.mode === 'fixed') return shape.count;
    while (shape.arrivals.length > 0 && now - (shape.arrivals[0] as number) >= this.windowMs) shape.arrivals.shift();
    return shape.arrivals.reduce((sum, at) => sum + Math.max(0, 1 - (now - at) / this.windowMs), 0);
  }

  #forgetLeastWanted(now: number): void {
    let least: [string, number] | undefined;
    for (const [key, shape] of this.#shapes) {
      const weight = this.#weight(shape, now);
      if (least === undefined || weight < least[1]) least = [key, weight];
    }
    if (least !== undefined) this.#shapes.delete(least[0]);
  }
}

/**
 * `total` split among the keys in proportion to their weights, by largest
 * remainder (Hamilton's method): the counts add up to `total` exactly, and
 * each is its exact share rounded down or up. Ties go to the heavier key.
 */
export function apportion(weights: ReadonlyMap<string, number>, sum: number, total: number): Map<string, number> {
  const counts = new Map<string, number>();
  if (sum <= 0 || total <= 0) return counts;
  const remainders: [string, number, number][] = [];
  let given = 0;
  for (const [key, weight] of weights) {
    const exact = (total * weight) / sum;
    const whole = Math.floor(exact);
    counts.set(key, whole);
    given += whole;
    remainders.push([key, exact - whole, weight]);
  }
  remainders.sort((a, b) => b[1] - a[1] || b[2] - a[2]);
  for (const [key] of remainders.slice(0, total - given)) counts.set(key, (counts.get(key) ?? 0) + 1);
  return counts;
}
