/**
 * The host lifetime policy (docs/fleet.md, "Host lifetime"): the worker
 * drains and exits by itself once no job has run for
 * `TRAVIS_WORKER_IDLE_SHUTDOWN_AFTER`, once it has taken
 * `TRAVIS_WORKER_MAX_JOBS` jobs (the pool's job budget says when), or after
 * `TRAVIS_WORKER_MAX_UPTIME`. Each uses the worker's one drain.
 *
 * A job that arrives just as the idle timer fires is never lost: the drain
 * first stops every consumer, and then a delivery already handed to a
 * processor runs to its end (the drain waits for it), while one that
 * reached the worker but no processor goes back to the queue (the source
 * nacks it on close). Either way the broker, not a timer, decides.
 */
import type { LifetimeConfig } from '../config/types.js';
import type { Logger } from '../logger.js';
import type { JobBudget } from '../job-budget.js';
import type { ProcessorStatus } from '../processor.js';

/** Which limit ended the host's life. */
export type LifetimeLimit = 'idle' | 'max-jobs' | 'max-uptime';

/** What the policy watches and drains. */
export interface LifetimeSubject {
  /** Drain (stop taking jobs, let running ones finish, then stop). */
  drain(reason: string): void;
  /** Whether the worker is still taking jobs (RUNNING or PAUSED): a drain now is the policy's own. */
  acceptsDrain(): boolean;
  /** Jobs running now. */
  runningJobs(): number;
  /** Subscribe to processor changes; returns the unsubscriber. */
  onProcessorChange(listener: (status: ProcessorStatus) => void): () => void;
  readonly budget: JobBudget;
}

export interface LifetimeWatch {
  /** The limit that drained the worker, once one has; undefined while none has (or another drain came first). */
  readonly reached: LifetimeLimit | undefined;
}

/** Watch `policy` on `subject` until `signal` aborts (the worker stops). */
export function watchLifetime(policy: LifetimeConfig, subject: LifetimeSubject, logger: Logger, signal: AbortSignal): LifetimeWatch {
  const watch: { reached: LifetimeLimit | undefined } = { reached: undefined };
  const timers: NodeJS.Timeout[] = [];
  const cleanups: Array<() => void> = [];

  const reach = (limit: LifetimeLimit, reason: string, fields: Record<string, unknown>): void => {
    if (signal.aborted || watch.reached !== undefined || !subject.acceptsDrain()) return;
    watch.reached = limit;
    logger.info({ limit, ...fields }, `host lifetime: ${reason}; draining`);
    subject.drain(reason);
  };

  if (policy.maxUptimeMs > 0) {
    timers.push(setTimeout(() => reach('max-uptime', 'TRAVIS_WORKER_MAX_UPTIME reached', { max_uptime_ms: policy.maxUptimeMs }), policy.maxUptimeMs));
  }

  if (policy.maxJobs > 0) {
    const spent = (): void => reach('max-jobs', 'TRAVIS_WORKER_MAX_JOBS taken', { max_jobs: policy.maxJobs });
    subject.budget.on('spent', spent);
    cleanups.push(() => subject.budget.off('spent', spent));
    // Spent while the pool was starting, before a drain could be accepted.
    if (subject.budget.spent >= policy.maxJobs) spent();
  }

  if (policy.idleShutdownAfterMs > 0) {
    let idleTimer: NodeJS.Timeout | undefined;
    const fire = (): void => reach('idle', 'no job ran for TRAVIS_WORKER_IDLE_SHUTDOWN_AFTER', { idle_shutdown_after_ms: policy.idleShutdownAfterMs });
    const check = (): void => {
      if (subject.runningJobs() > 0) {
        clearTimeout(idleTimer);
        idleTimer = undefined;
      } else {
        idleTimer ??= setTimeout(fire, policy.idleShutdownAfterMs);
      }
    };
    cleanups.push(subject.onProcessorChange(check));
    cleanups.push(() => clearTimeout(idleTimer));
    check();
  }

  signal.addEventListener(
    'abort',
    () => {
      for (const timer of timers) clearTimeout(timer);
      for (const cleanup of cleanups) cleanup();
    },
    { once: true },
  );
  return watch;
}
