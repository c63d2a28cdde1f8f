/**
 * A job's clock: step deadlines, the hard limit and the log-silence
 * watchdog. Fake timers: the tests move the clock, they never wait.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { StartupTimeoutError, UploadTimeoutError } from '../../src/errors.js';
import { JobStopController } from '../../src/job/stop.js';
import { JobClock, type JobTimeouts } from '../../src/job/timers.js';
import { MAX_TIMER_MS, startTimer } from '../../src/util/timers.js';

/** Long enough that it never passes in a test. */
const NEVER_MS = 3_600_000;

const clocks: JobClock[] = [];

function clockFor(timeouts: Partial<JobTimeouts> = {}): { stop: JobStopController; clock: JobClock } {
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
  const stop = new JobStopController();
  const clock = new JobClock(stop, { hardMs: NEVER_MS, logSilenceMs: NEVER_MS, startupMs: NEVER_MS, scriptUploadMs: NEVER_MS, ...timeouts });
  clocks.push(clock);
  return { stop, clock };
}

afterEach(() => {
  for (const clock of clocks.splice(0)) clock.dispose();
  vi.useRealTimers();
});

describe('JobClock step deadlines', () => {
  it('fails the startup with its own error when the deadline passes first', async () => {
    const { stop, clock } = clockFor({ startupMs: 90_000 });
    const startup = clock.startupDeadline();
    await vi.advanceTimersByTimeAsync(89_999);
    expect(startup.signal.aborted).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(startup.signal.reason).toBeInstanceOf(StartupTimeoutError);
    expect((startup.signal.reason as StartupTimeoutError).userMessage).toBe('The instance did not start within 90s.');
    expect(stop.signal.aborted).toBe(false);
    startup.dispose();
  });

  it('fails the upload with its own error, or with the job reason when the job stops first', async () => {
    const { stop, clock } = clockFor({ scriptUploadMs: 1000 });
    const upload = clock.uploadDeadline();
    await vi.advanceTimersByTimeAsync(1000);
    expect(upload.signal.reason).toBeInstanceOf(UploadTimeoutError);
    upload.dispose();

    const second = clock.uploadDeadline();
    stop.stop({ kind: 'shutdown' });
    expect(second.signal.reason).toBe(stop.signal.reason);
    second.dispose();
    expect(clock.startupDeadline().signal.reason).toBe(stop.signal.reason);
  });

  it('leaves no timer behind once a step is disposed', () => {
    const { clock } = clockFor();
    clock.startupDeadline().dispose();
    clock.uploadDeadline().dispose();
    expect(vi.getTimerCount()).toBe(0);
  });
});

describe('JobClock hard limit', () => {
  it('counts from the start of the script and stops the job naming the limit', async () => {
    const { stop, clock } = clockFor({ hardMs: 5000 });
    await vi.advanceTimersByTimeAsync(10_000);
    expect(stop.signal.aborted).toBe(false);
    clock.scriptStarted();
    await vi.advanceTimersByTimeAsync(4999);
    expect(stop.signal.aborted).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(stop.reason).toEqual({ kind: 'hard-timeout', limitMs: 5000 });
  });

  it('keeps running after the script ended, until the clock is disposed', async () => {
    const { stop, clock } = clockFor({ hardMs: 5000 });
    clock.scriptStarted();
    clock.scriptEnded();
    await vi.advanceTimersByTimeAsync(5000);
    expect(stop.reason).toEqual({ kind: 'hard-timeout', limitMs: 5000 });

    const other = clockFor({ hardMs: 5000 });
    other.clock.scriptStarted();
    other.clock.dispose();
    await vi.advanceTimersByTimeAsync(5000);
    expect(other.stop.signal.aborted).toBe(false);
  });

  it('refuses a limit a timer cannot wait, naming it, instead of firing at once', () => {
    const { clock } = clockFor({ hardMs: MAX_TIMER_MS + 1 });
    expect(() => clock.scriptStarted()).toThrow(/^hard timeout: 2147483648 ms is not a delay a timer can wait/);
  });
});

describe('JobClock log silence', () => {
  it('fires only while the script runs, once, and restarts on output', async () => {
    const { stop, clock } = clockFor({ logSilenceMs: 1000 });
    clock.output();
    await vi.advanceTimersByTimeAsync(5000);
    expect(stop.signal.aborted).toBe(false);

    clock.scriptStarted();
    await vi.advanceTimersByTimeAsync(999);
    clock.output();
    await vi.advanceTimersByTimeAsync(999);
    expect(stop.signal.aborted).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(stop.reason).toEqual({ kind: 'log-silence', limitMs: 1000 });
    clock.output();
    // Only the hard limit is left: output after the watchdog fired arms nothing.
    expect(vi.getTimerCount()).toBe(1);
  });

  it('stops measuring when the script ends, and measures afresh when one starts again', async () => {
    const { stop, clock } = clockFor({ logSilenceMs: 1000 });
    clock.scriptStarted();
    await vi.advanceTimersByTimeAsync(900);
    clock.scriptEnded();
    await vi.advanceTimersByTimeAsync(5000);
    expect(stop.signal.aborted).toBe(false);
    clock.scriptStarted();
    await vi.advanceTimersByTimeAsync(1000);
    expect(stop.reason).toEqual({ kind: 'log-silence', limitMs: 1000 });
  });

  it('leaves no timer behind once disposed', async () => {
    const { stop, clock } = clockFor({ logSilenceMs: 1000, hardMs: 5000 });
    clock.scriptStarted();
    clock.dispose();
    clock.output();
    await vi.advanceTimersByTimeAsync(10_000);
    expect(stop.signal.aborted).toBe(false);
    expect(vi.getTimerCount()).toBe(0);
  });
});

describe('startTimer', () => {
  it('refuses a delay past the longest a timer can wait, or a negative one', () => {
    expect(() => startTimer('some deadline', MAX_TIMER_MS + 1, () => {})).toThrow(RangeError);
    expect(() => startTimer('some deadline', -1, () => {})).toThrow(/^some deadline: -1 ms/);
  });
});
