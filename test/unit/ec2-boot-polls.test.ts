/** When the ec2 backend asks whether a boot is done (backends/ec2/boot-polls.ts), on a clock the test moves. */
import { describe, expect, it } from 'vitest';
import { BootPolls } from '../../backends/ec2/boot-polls.js';

/** The moments (ms after launch) of the first `count` checks, each after its pause. */
function checks(polls: BootPolls, count: number): number[] {
  let now = 0;
  const pauses = polls.pauses(0, () => now);
  const at: number[] = [];
  for (let i = 0; i < count; i++) {
    now += pauses.next().value;
    at.push(now);
  }
  return at;
}

describe('ec2 boot polls', () => {
  it('start short and double up to the ceiling before any boot was seen', () => {
    expect(checks(new BootPolls(250, 2_000), 7)).toEqual([250, 750, 1_750, 3_750, 5_750, 7_750, 9_750]);
  });

  it('check right at the usual boot time and often just after it, never more often than the ceiling before it', () => {
    const polls = new BootPolls(250, 2_000);
    for (const ms of [20_000, 21_000, 25_000, 30_000]) polls.record(ms);
    expect(polls.usualMs()).toBe(20_000);
    const at = checks(polls, 18);
    const before = at.filter((ms) => ms < 20_000);
    expect(before.slice(4).every((ms, i) => ms - (before[i + 3] as number) === 2_000)).toBe(true);
    expect(at).toContain(20_000);
    expect(at.filter((ms) => ms > 20_000).slice(0, 4)).toEqual([20_250, 20_750, 21_750, 23_750]);
  });

  it('remembers only the last boots', () => {
    const polls = new BootPolls(250, 2_000);
    polls.record(1_000);
    for (let i = 0; i < 20; i++) polls.record(30_000);
    expect(polls.usualMs()).toBe(30_000);
  });
});
