/**
 * How a job run ends, decided here and nowhere else. A run ends in one of
 * three ways:
 *
 * - finished: a terminal state is published (the script's exit status, a
 *   stop that ends the job, or an error that is the job's own);
 * - requeued: `reset` is published and the job runs again, because the
 *   infrastructure failed (an error that requeues, src/errors.ts) or the
 *   worker stopped the run without it being the job's fault (shutdown, a
 *   log that could not be delivered);
 * - abandoned: nothing more can be reported for this delivery (it was lost,
 *   or publishing the state failed); the broker hands the job out again.
 *
 * The pipeline (run-job.ts) asks for the decision, carries it out, and
 * returns the `JobResult`; the circuit breaker, the requeue limit and the
 * metrics read that result's types.
 */
import { isMayflyError, type ErrorCode } from '../errors.js';
import type { TerminalState } from '../queue/contract.js';
import { formatGoDuration } from '../config/formats.js';
import type { StopReason } from './stop.js';

/** The code a requeue reports for an error mayfly did not raise on purpose (a bug is not the job's fault: run it again). */
export const UNEXPECTED_ERROR_CODE = 'E_UNEXPECTED';

/** The stops that run the job again: the worker is shutting down, or the log lost parts. */
export type RequeueStopKind = Extract<StopReason['kind'], 'shutdown' | 'log-undeliverable'>;

/**
 * Why a job was requeued: the code of the error that ended the run, or the
 * stop that did. Error codes (`E_...`) and stop kinds never overlap.
 */
export type RequeueCause = ErrorCode | typeof UNEXPECTED_ERROR_CODE | RequeueStopKind;

/** Why a run was left to the broker: its delivery was lost, or no state could be published for it. */
export type AbandonCause = Extract<StopReason['kind'], 'delivery-lost'> | 'report failed';

/** How a job run ended, as the pipeline returns it. */
export type JobResult =
  | { outcome: 'finished'; state: TerminalState }
  | {
      outcome: 'requeued';
      cause: RequeueCause;
      /** True once the instance had started and taken its script: a failure after that is not a failed start. */
      instanceReady: boolean;
    }
  | { outcome: 'abandoned'; cause: AbandonCause };

/** What the pipeline is to do to end a run, decided before anything is published. */
export type EndDecision =
  /** Publish `state`, after `logLine` (the job log's last words) when there is one. */
  | { action: 'finish'; state: TerminalState; logLine?: string }
  | { action: 'requeue'; cause: RequeueCause }
  | { action: 'abandon'; cause: AbandonCause };

/** Exit status -> state, as travis: 0 passed, 1 failed, anything else (or a signal) errored. */
export function stateOfExit(exitCode: number | null): TerminalState {
  if (exitCode === 0) return 'passed';
  if (exitCode === 1) return 'failed';
  return 'errored';
}

/**
 * The end of a run that threw `err`. A stop reason, when the job was
 * stopped, wins over the error: the error is then only the stop arriving
 * in whatever step was running.
 */
export function endOf(stop: StopReason | undefined, err: unknown): EndDecision {
  if (stop) return endOfStop(stop);
  if (isMayflyError(err) && !err.requeue) {
    return { action: 'finish', state: 'errored', logLine: `\n${err.userMessage ?? err.message}\n` };
  }
  // Infrastructure failures, known or not, are not the job's fault: run it again.
  return { action: 'requeue', cause: isMayflyError(err) ? err.code : UNEXPECTED_ERROR_CODE };
}

/** The log lines keep travis' wording and add the limit. */
function endOfStop(reason: StopReason): EndDecision {
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
      return { action: 'requeue', cause: reason.kind };
    case 'delivery-lost':
      return { action: 'abandon', cause: reason.kind };
  }
}

/** The end that replaces a requeue for `cause` once the job was requeued `limit` times in a row (src/job/requeues.ts). */
export function endPastRequeueLimit(cause: RequeueCause, limit: number): EndDecision {
  const times = `${limit} time${limit === 1 ? '' : 's'}`;
  return {
    action: 'finish',
    state: 'errored',
    logLine: `\n\nThe job was requeued ${times} in a row (the last time for ${cause}) and has been errored instead of being requeued again.\n\n`,
  };
}
