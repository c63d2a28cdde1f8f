/**
 * Why a job is stopped before its script ends by itself. One controller per
 * job: its signal is the job's AbortSignal (shutdown + cancel + hard timeout
 * + log limits), and the first reason wins. What each reason means for the
 * job is decided in outcome.ts; the timers that stop it live in timers.ts.
 */

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

export class JobStopController {
  private readonly controller = new AbortController();

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
}
