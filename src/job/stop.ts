/**
 * Why a job is stopped before its script ends by itself, and what each
 * reason means for the job. One controller per job: its signal is the job's
 * AbortSignal (shutdown + cancel + hard timeout + log limits), and the first
 * reason wins.
 */
import { formatGoDuration } from '../config/formats.js';
import type { TerminalState } from '../queue/contract.js';

export type StopReason =
  | { kind: 'cancelled'; reason: string }
  | { kind: 'hard-timeout'; limitMs: number }
  | { kind: 'log-silence'; limitMs: number }
  | { kind: 'max-log-length'; limitBytes: number }
  /** The worker is shutting down: the job runs again elsewhere. */
  | { kind: 'shutdown' }
  /** The delivery can no longer be acknowledged; the broker redelivers it, so this run just stops. */
  | { kind: 'delivery-lost' }
  /** Log parts went unconfirmed past `TRAVIS_WORKER_LOG_DELIVERY_TIMEOUT`: the log has a hole, so run the job again. */
  | { kind: 'log-undeliverable' };

/** The error a stopped job's signal carries, so code that rethrows `signal.reason` rethrows this. */
export class JobStoppedError extends Error {
  constructor(readonly stop: StopReason) {
    super(`job stopped: ${stop.kind}`);
    this.name = 'JobStoppedError';
  }
}

export type StopOutcome =
  | { action: 'finish'; state: TerminalState; logLine: string }
  | { action: 'requeue' }
  | { action: 'abandon' };

/** What happens to a job stopped for `reason`; the log lines keep travis' wording and add the limit. */
export function outcomeOf(reason: StopReason): StopOutcome {
  switch (reason.kind) {
    case 'cancelled':
      return {
        action: 'finish',
        state: 'cancelled',
        logLine: `\n\nDone: Job Cancelled\n\n${reason.reason}`,
      };
    case 'hard-timeout':
      return {
        action: 'finish',
        state: 'errored',
        logLine: `\n\nThe job exceeded the maximum time limit for jobs (${formatGoDuration(reason.limitMs)}), and has been terminated.\n\n`,
      };
    case 'log-silence':
      return {
        action: 'finish',
        state: 'errored',
        logLine:
          `\n\nNo output has been received in the last ${formatGoDuration(reason.limitMs)}, this potentially indicates a stalled build or something wrong with the build itself.\n` +
          'Check the details on how to adjust your build configuration on: https://docs.travis-ci.com/user/common-build-problems/#build-times-out-because-no-output-was-received\n\n' +
          'The build has been terminated\n\n',
      };
    case 'max-log-length':
      return {
        action: 'finish',
        state: 'errored',
        logLine: `\n\nThe job exceeded the maximum log length (${reason.limitBytes} bytes), and has been terminated.\n\n`,
      };
    case 'shutdown':
    case 'log-undeliverable':
      return { action: 'requeue' };
    case 'delivery-lost':
      return { action: 'abandon' };
  }
}

export class JobStopController {
  private readonly controller = new AbortController();
  private hardTimer: NodeJS.Timeout | undefined;

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /** The first reason given, if any. */
  get reason(): StopReason | undefined {
    const reason: unknown = this.controller.signal.reason;
    return reason instanceof JobStoppedError ? reason.stop : undefined;
  }

  stop(reason: StopReason): void {
    if (!this.controller.signal.aborted) this.controller.abort(new JobStoppedError(reason));
  }

  /** Stop with `reason` when `signal` aborts (e.g. worker shutdown); returns the unlink function. */
  stopWhen(signal: AbortSignal, reason: StopReason): () => void {
    if (signal.aborted) {
      this.stop(reason);
      return () => {};
    }
    const onAbort = (): void => this.stop(reason);
    signal.addEventListener('abort', onAbort, { once: true });
    return () => signal.removeEventListener('abort', onAbort);
  }

  /** The hard limit counts from the start of the script, as in travis. */
  startHardTimeout(limitMs: number): void {
    this.hardTimer = setTimeout(() => this.stop({ kind: 'hard-timeout', limitMs }), limitMs);
  }

  dispose(): void {
    clearTimeout(this.hardTimer);
  }
}

/**
 * A signal for one step: aborts with the job's reason when the job stops,
 * or with `onTimeout()` (a step-specific error such as StartupTimeoutError)
 * when `timeoutMs` passes first.
 */
export function stepSignal(
  jobSignal: AbortSignal,
  timeoutMs: number,
  onTimeout: () => Error,
): { signal: AbortSignal; dispose: () => void } {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(onTimeout()), timeoutMs);
  const onJobStop = (): void => controller.abort(jobSignal.reason);
  if (jobSignal.aborted) onJobStop();
  else jobSignal.addEventListener('abort', onJobStop, { once: true });
  return {
    signal: controller.signal,
    dispose: () => {
      clearTimeout(timer);
      jobSignal.removeEventListener('abort', onJobStop);
    },
  };
}
