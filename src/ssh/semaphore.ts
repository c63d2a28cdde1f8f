/**
 * A counting semaphore whose waits can be aborted: at most `limit` holders
 * at a time, the others served first come, first served.
 */
export class Semaphore {
  private held = 0;
  private readonly queue: Array<{ grant: () => void }> = [];

  /** `limit`: holders at once, at least 1. */
  constructor(readonly limit: number) {
    if (!(Number.isInteger(limit) && limit >= 1)) throw new RangeError(`a semaphore needs a limit of at least 1, got ${limit}`);
  }

  /** Holders right now. */
  get active(): number {
    return this.held;
  }

  /** Callers waiting for a turn. */
  get waiting(): number {
    return this.queue.length;
  }

  /**
   * Resolves with a release function (idempotent) once a turn is free;
   * rejects with `signal.reason` if the signal aborts first (the turn is
   * then never taken).
   */
  acquire(signal: AbortSignal): Promise<() => void> {
    if (signal.aborted) return Promise.reject(signal.reason);
    if (this.held < this.limit) {
      this.held += 1;
      return Promise.resolve(this.releaser());
    }
    return new Promise((resolve, reject) => {
      const entry = {
        grant: (): void => {
          signal.removeEventListener('abort', onAbort);
          resolve(this.releaser());
        },
      };
      const onAbort = (): void => {
        const index = this.queue.indexOf(entry);
        if (index >= 0) this.queue.splice(index, 1);
        reject(signal.reason);
      };
      signal.addEventListener('abort', onAbort, { once: true });
      this.queue.push(entry);
    });
  }

  private releaser(): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.queue.shift();
      // The turn passes straight to the next waiter: `held` stays the same.
      if (next) next.grant();
      else this.held -= 1;
    };
  }
}
