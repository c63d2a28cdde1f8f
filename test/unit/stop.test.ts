import { describe, expect, it } from 'vitest';
import { JobStopController, outcomeOf, stepSignal } from '../../src/job/stop.js';
import { stateOfExit } from '../../src/job/run-job.js';

describe('job stop reasons', () => {
  it('maps each reason to the state travis reports, naming the limit', () => {
    expect(outcomeOf({ kind: 'cancelled', reason: 'by user' })).toEqual({
      action: 'finish',
      state: 'cancelled',
      logLine: '\n\nDone: Job Cancelled\n\nby user',
    });
    const hard = outcomeOf({ kind: 'hard-timeout', limitMs: 50 * 60_000 });
    expect(hard).toMatchObject({ action: 'finish', state: 'errored' });
    expect(hard.action === 'finish' && hard.logLine).toContain('maximum time limit for jobs (50m0s)');
    const silence = outcomeOf({ kind: 'log-silence', limitMs: 10 * 60_000 });
    expect(silence.action === 'finish' && silence.logLine).toContain('No output has been received in the last 10m0s');
    const long = outcomeOf({ kind: 'max-log-length', limitBytes: 4_500_000 });
    expect(long.action === 'finish' && long.logLine).toContain('maximum log length (4500000 bytes)');
    expect(outcomeOf({ kind: 'shutdown' })).toEqual({ action: 'requeue' });
    expect(outcomeOf({ kind: 'delivery-lost' })).toEqual({ action: 'abandon' });
  });

  it('maps exit codes as travis does', () => {
    expect([0, 1, 2, 137, null].map(stateOfExit)).toEqual(['passed', 'failed', 'errored', 'errored', 'errored']);
  });

  it('keeps the first reason', () => {
    const stop = new JobStopController();
    stop.stop({ kind: 'cancelled', reason: 'first' });
    stop.stop({ kind: 'shutdown' });
    expect(stop.reason).toEqual({ kind: 'cancelled', reason: 'first' });
    expect(stop.signal.aborted).toBe(true);
  });

  it('gives a step its own timeout error, or the job reason when the job stops first', async () => {
    const job = new AbortController();
    const step = stepSignal(job.signal, 10, () => new Error('step timed out'));
    await new Promise((resolve) => step.signal.addEventListener('abort', resolve));
    expect((step.signal.reason as Error).message).toBe('step timed out');
    step.dispose();

    const other = stepSignal(job.signal, 60_000, () => new Error('never'));
    job.abort(new Error('job stopped'));
    expect((other.signal.reason as Error).message).toBe('job stopped');
    other.dispose();
  });
});
