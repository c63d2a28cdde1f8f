/**
 * The circuit breaker against requeue storms (docs/operations.md). A backend that
 * cannot start instances (quota gone, image deleted, API down) makes every
 * job fail within seconds and go back to the queue, where this worker takes
 * it again at once: thousands of requeues an hour, each one a cloud call and
 * a log. After `threshold` start failures in a row the breaker opens: the
 * worker takes no job for a backoff that doubles on every opening (with
 * jitter, so a fleet that failed together does not retry together); then it
 * lets one job through (half-open). That job's instance starting closes the
 * breaker; its failing reopens it for longer.
 *
 *   closed --threshold failures in a row--> open --backoff--> half-open
 *   half-open --a start succeeds--> closed
 *   half-open --a start fails--> open (next backoff step)
 *
 * This module only decides; the worker applies the decision with the
 * pool's pause (src/pool.ts) and reports it in /ready, logs and metrics.
 */
import { EventEmitter } from 'node:events';
import type { ErrorCode } from '../errors.js';
import type { JobResult, RequeueCause } from '../job/outcome.js';
import type { Logger } from '../logger.js';

/**
 * The requeue causes that mean "the job could not be given a working
 * machine with its script". The job never ran a line of its script; the
 * same fault will hit the next job too. Upload failures count: the instance
 * came up but could not be reached or written to, which is a broken image or
 * network as much as a failed boot. `E_STALE_VM` counts: the backend handed
 * out a machine that had already run a job, so it can't give clean ones.
 * `E_SCRIPT_UNAVAILABLE` counts: while the build API is down every job would
 * be taken, marked received and reset in a loop; held back, they wait in the
 * queue instead (travis errors them after a minute; mayfly keeps them).
 *
 * Not counted: `E_CONNECTION_LOST` (the script was running: the start
 * worked), `E_BROKER` and stop reasons (shutdown, cancel, lost delivery),
 * and unexpected errors (a bug is not an outage).
 */
const START_FAILURE_CODES = [
  'E_SCRIPT_UNAVAILABLE',
  'E_INSTANCE_START',
  'E_NO_CAPACITY',
  'E_STARTUP_TIMEOUT',
  'E_SSH_UNREACHABLE',
  'E_UPLOAD',
  'E_UPLOAD_TIMEOUT',
  'E_STALE_VM',
] as const satisfies readonly ErrorCode[];

export type StartFailureCode = (typeof START_FAILURE_CODES)[number];

const startFailureCodes: ReadonlySet<RequeueCause> = new Set(START_FAILURE_CODES);

/** True when an error with `code` means an instance could not be started (the codes above). */
export function isStartFailureCode(code: string): code is StartFailureCode {
  return startFailureCodes.has(code as RequeueCause);
}

/** A job run the breaker counts as a failed start. */
export type StartFailure = Extract<JobResult, { outcome: 'requeued' }> & { cause: StartFailureCode; instanceReady: false };

/**
 * True when `result` is a failure to start an instance: the job was
 * requeued for one of the causes above before its instance was ever ready.
 * Once the instance was ready the start worked, whatever fails later.
 */
export function isStartFailure(result: JobResult): result is StartFailure {
  return result.outcome === 'requeued' && !result.instanceReady && startFailureCodes.has(result.cause);
}

/**
 * Each backoff is between this fraction below its step and the step itself
 * (75%..100%): enough spread that workers opened by the same outage probe
 * at different moments, never longer than the configured step.
 */
export const BACKOFF_JITTER = 0.25;

export type BreakerState = 'closed' | 'open' | 'half-open';

export interface BreakerOptions {
  /** Start failures in a row that open the breaker; 0 = never open. */
  threshold: number;
  /** The first backoff, in ms; each further opening without a close doubles it. */
  backoffMs: number;
  /** The longest backoff, in ms. */
  maxBackoffMs: number;
  logger: Logger;
  /** Uniform in [0, 1); `Math.random` unless a test fixes it. */
  random?: () => number;
}

/** What the breaker says when it opens. */
export interface BreakerOpened {
  /** Start failures in a row that led here. */
  failures: number;
  /** True when the one job let through (half-open) failed too. */
  trialFailed: boolean;
  /** The cause of the last failure. */
  lastCode: StartFailureCode;
  /** How long until the next trial, in ms. */
  backoffMs: number;
  /** Openings since the breaker was last closed, this one included. */
  openings: number;
}

export interface BreakerEvents {
  open: [BreakerOpened];
  'half-open': [];
  /** `openMs`: how long jobs were held back, in ms. */
  close: [openMs: number];
}

/**
 * The backoff of the `opening`-th opening since the last close (1-based):
 * `backoffMs * 2^(opening-1)`, capped at `maxBackoffMs`, minus up to
 * `BACKOFF_JITTER` of it.
 */
export function backoffFor(opening: number, options: Pick<BreakerOptions, 'backoffMs' | 'maxBackoffMs'>, random: number): number {
  // 2^30 already exceeds any sane maximum; capping the exponent keeps the number finite.
  const step = Math.min(options.maxBackoffMs, options.backoffMs * 2 ** Math.min(opening - 1, 30));
  return Math.round(step * (1 - BACKOFF_JITTER * random));
}

export class CircuitBreaker extends EventEmitter<BreakerEvents> {
  #state: BreakerState = 'closed';
  #failures = 0;
  /** Set by the first failure, before the breaker can leave `closed`. */
  #lastCode: StartFailureCode | undefined;
  #openings = 0;
  #openedAt = 0;
  #retryAt = 0;
  #timer: NodeJS.Timeout | undefined;
  #disposed = false;
  readonly #options: BreakerOptions;
  readonly #random: () => number;

  constructor(options: BreakerOptions) {
    super();
    this.#options = options;
    this.#random = options.random ?? Math.random;
  }

  get state(): BreakerState {
    return this.#state;
  }

  /** Start failures in a row so far. */
  get consecutiveFailures(): number {
    return this.#failures;
  }

  /** Why jobs are held back, for /ready; undefined while closed. */
  reason(): string | undefined {
    if (this.#state === 'closed') return undefined;
    const what = `jobs failed to start ${this.#failures} times in a row (last: ${this.#lastCode})`;
    if (this.#state === 'half-open') return `${what}: circuit breaker half-open, trying one job`;
    const seconds = Math.max(0, Math.ceil((this.#retryAt - Date.now()) / 1000));
    return `${what}: circuit breaker open, trying one job again in ${seconds}s`;
  }

  /** A job's instance could not be started (`code`: the cause of its requeue). */
  recordFailure(code: StartFailureCode): void {
    if (this.#disposed || this.#options.threshold === 0) return;
    // Failures of jobs that were already starting when it opened say nothing new.
    if (this.#state === 'open') return;
    this.#failures++;
    this.#lastCode = code;
    if (this.#state === 'half-open' || this.#failures >= this.#options.threshold) this.#open(this.#state === 'half-open', code);
  }

  /** A job's instance started and took its script. */
  recordSuccess(): void {
    if (this.#disposed) return;
    if (this.#state === 'open') return; // a start from before the opening; the trial decides
    this.#failures = 0;
    if (this.#state === 'closed') return;
    const openMs = Date.now() - this.#openedAt;
    this.#state = 'closed';
    this.#openings = 0;
    this.#options.logger.info(
      { breaker: 'closed', held_back_ms: openMs },
      'circuit breaker closed: an instance started; taking jobs again',
    );
    this.emit('close', openMs);
  }

  /** Half-open now instead of at the end of the backoff (an operator who knows the outage is over; tests). */
  retryNow(): void {
    if (this.#state !== 'open') return;
    clearTimeout(this.#timer);
    this.#halfOpen();
  }

  /** Stop its timer (worker shutdown). */
  dispose(): void {
    this.#disposed = true;
    clearTimeout(this.#timer);
  }

  #open(trialFailed: boolean, lastCode: StartFailureCode): void {
    if (this.#state === 'closed') this.#openedAt = Date.now();
    this.#state = 'open';
    this.#openings++;
    const backoffMs = backoffFor(this.#openings, this.#options, this.#random());
    this.#retryAt = Date.now() + backoffMs;
    const opened: BreakerOpened = { failures: this.#failures, trialFailed, lastCode, backoffMs, openings: this.#openings };
    this.#options.logger.warn(
      { breaker: 'open', failures: opened.failures, last_code: opened.lastCode, backoff_ms: backoffMs, openings: opened.openings },
      `circuit breaker open: ${trialFailed ? 'the trial job failed to start too' : `jobs failed to start ${opened.failures} times in a row`}; taking no jobs for ${Math.ceil(backoffMs / 1000)}s`,
    );
    this.emit('open', opened);
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => this.#halfOpen(), backoffMs);
  }

  #halfOpen(): void {
    if (this.#disposed || this.#state !== 'open') return;
    this.#state = 'half-open';
    this.#options.logger.debug({ breaker: 'half-open' }, 'circuit breaker half-open: letting one job through');
    this.emit('half-open');
  }
}
