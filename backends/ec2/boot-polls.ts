/**
 * When to ask EC2 whether a launched instance runs. EC2 has no call that
 * waits for a state (the SDK's waiters poll too), so the backend polls;
 * instances of one worker take about as long to boot as each other, so it
 * learns how long from the last boots and asks often around then, rarely
 * before:
 *
 * - pauses start at `firstMs` and double up to `ceilingMs` (BOOT_POLL_SLEEP),
 *   so a boot far from the usual is asked about no more often than the
 *   setting allows;
 * - no pause runs past the usual boot time (the lower quartile of the last
 *   RECENT_BOOTS), and from there the pauses start short again: a usual
 *   boot is seen within about `firstMs` of being done, for a call or two
 *   more than a fixed interval would make.
 */
import { growingDelays } from '../../src/backend/kit.js';

/** Boots remembered. */
const RECENT_BOOTS = 20;

export class BootPolls {
  readonly #recent: number[] = [];

  constructor(
    private readonly firstMs: number,
    private readonly ceilingMs: number,
  ) {}

  /** A boot was still pending `ms` after launch and running at the next check. */
  record(ms: number): void {
    this.#recent.push(ms);
    if (this.#recent.length > RECENT_BOOTS) this.#recent.shift();
  }

  /** The usual boot time: most boots take at least this long; undefined before the first. */
  usualMs(): number | undefined {
    if (this.#recent.length === 0) return undefined;
    const sorted = [...this.#recent].sort((a, b) => a - b);
    return sorted[Math.floor((sorted.length - 1) / 4)];
  }

  /** The pauses before each check of a boot launched at `launchedAt` (ms since the epoch), read as they are taken. */
  *pauses(launchedAt: number, now: () => number = Date.now): Generator<number, never> {
    const usual = this.usualMs();
    let reachedUsual = usual === undefined;
    let delays = growingDelays(this.firstMs, this.ceilingMs);
    for (;;) {
      const elapsed = now() - launchedAt;
      if (!reachedUsual && usual !== undefined && elapsed >= usual) {
        reachedUsual = true;
        delays = growingDelays(this.firstMs, this.ceilingMs);
      }
      const delay = delays.next().value;
      yield reachedUsual || usual === undefined ? delay : Math.min(delay, usual - elapsed);
    }
  }
}
