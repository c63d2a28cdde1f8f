/**
 * A job's clock: every deadline of one job run, in one place.
 *
 * - the startup and upload deadlines fail only their step, with the step's
 *   own error (which requeues the job: the infrastructure was too slow);
 * - the hard limit counts from the start of the script, as in travis, and
 *   stops the job (`hard-timeout`);
 * - the log-silence watchdog runs while the script runs; every output the
 *   log writer reports (`output()`) starts its measurement again, and once
 *   it passes it stops the job (`log-silence`).
 *
 * The clock only stops the job; what a stop means for it is decided in
 * outcome.ts.
 */
import { StartupTimeoutError, UploadTimeoutError } from '../errors.js';
import { startTimer } from '../util/timers.js';
import type { JobStopController } from './stop.js';

/** A job's limits, in milliseconds. */
export interface JobTimeouts {
  /** The script's run (`timeouts.hard_limit` of the payload, else `TRAVIS_WORKER_HARD_TIMEOUT`). */
  hardMs: number;
  /** Time without output while the script runs (`timeouts.log_silence`, else `TRAVIS_WORKER_LOG_TIMEOUT`). */
  logSilenceMs: number;
  /** Starting the instance (`TRAVIS_WORKER_STARTUP_TIMEOUT`). */
  startupMs: number;
  /** Uploading the script (`TRAVIS_WORKER_SCRIPT_UPLOAD_TIMEOUT`). */
  scriptUploadMs: number;
}

/** The signal of one step and the function that releases its timer (call it when the step ends). */
export interface StepDeadline {
  /** Aborts with the job's reason when the job stops, or with the step's timeout error when its deadline passes first. */
  signal: AbortSignal;
  dispose: () => void;
}

export class JobClock {
  #hardTimer: NodeJS.Timeout | undefined;
  #silenceTimer: NodeJS.Timeout | undefined;
  #scriptRunning = false;
  #silenceFired = false;

  constructor(
    private readonly stop: JobStopController,
    private readonly timeouts: JobTimeouts,
  ) {}

  /** The deadline of starting the instance. */
  startupDeadline(): StepDeadline {
    const { startupMs } = this.timeouts;
    return this.#stepDeadline('startup timeout', startupMs, () =>
      new StartupTimeoutError('instance not ready within the startup timeout', {
        userMessage: `The instance did not start within ${startupMs / 1000}s.`,
      }),
    );
  }

  /** The deadline of uploading the script. */
  uploadDeadline(): StepDeadline {
    return this.#stepDeadline('script upload timeout', this.timeouts.scriptUploadMs, () =>
      new UploadTimeoutError('script upload did not finish within the upload timeout'),
    );
  }

  /** The script starts: the hard limit counts from now, and silence is measured until `scriptEnded`. */
  scriptStarted(): void {
    const limitMs = this.timeouts.hardMs;
    clearTimeout(this.#hardTimer);
    this.#hardTimer = startTimer('hard timeout', limitMs, () => this.stop.stop({ kind: 'hard-timeout', limitMs }));
    this.#scriptRunning = true;
    this.#armSilence();
  }

  /**
   * The script ended: silence means nothing any more. The hard limit keeps
   * running until `dispose`, so a job that ran out of time as its script
   * exited still ends as timed out.
   */
  scriptEnded(): void {
    this.#scriptRunning = false;
    this.#clearSilence();
  }

  /** The job printed something (the log writer's `onOutput`): the silence measurement starts again. */
  output(): void {
    if (!this.#scriptRunning || this.#silenceFired) return;
    // Called for every chunk the script prints: restart the armed timer rather than make a new one.
    if (this.#silenceTimer) this.#silenceTimer.refresh();
    else this.#armSilence();
  }

  /** Release every timer (the job's run is over). */
  dispose(): void {
    this.#scriptRunning = false;
    this.#clearSilence();
    clearTimeout(this.#hardTimer);
    this.#hardTimer = undefined;
  }

  #armSilence(): void {
    if (this.#silenceFired) return;
    const limitMs = this.timeouts.logSilenceMs;
    this.#silenceTimer = startTimer('log silence timeout', limitMs, () => {
      this.#silenceTimer = undefined;
      if (!this.#scriptRunning || this.#silenceFired) return;
      this.#silenceFired = true;
      this.stop.stop({ kind: 'log-silence', limitMs });
    });
    // Restarted on every write: it must not be what keeps the process alive.
    this.#silenceTimer.unref();
  }

  #clearSilence(): void {
    clearTimeout(this.#silenceTimer);
    this.#silenceTimer = undefined;
  }

  /**
   * A signal for one step: aborts with the job's reason when the job stops,
   * or with `onTimeout()` when `timeoutMs` passes first.
   */
  #stepDeadline(what: string, timeoutMs: number, onTimeout: () => Error): StepDeadline {
    const jobSignal = this.stop.signal;
    const controller = new AbortController();
    const timer = startTimer(what, timeoutMs, () => controller.abort(onTimeout()));
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
}
