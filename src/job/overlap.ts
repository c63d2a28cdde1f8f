/**
 * Two steps of a job run at once (the build script and the instance start):
 * each gets a signal that aborts when the other fails, so no time is spent
 * on a job that cannot go on.
 */

/**
 * What `both` settles with: the values of both, or the failure that came
 * first and `settled`, which resolves once the other step has settled too
 * (whatever it made is then known to the caller, who releases it).
 */
export type BothOutcome<A, B> =
  | { ok: true; values: [A, B] }
  | { ok: false; error: unknown; failed: 'first' | 'second'; settled: Promise<void> };

/**
 * Run `first` and `second` together. When one rejects, the other's signal
 * aborts (with that error as its reason) and `both` resolves at once with
 * that failure: the job can report it without waiting for the other step
 * to wind down. The other's rejection, caused by the abort, is dropped.
 */
export function both<A, B>(first: (signal: AbortSignal) => Promise<A>, second: (signal: AbortSignal) => Promise<B>): Promise<BothOutcome<A, B>> {
  const stopFirst = new AbortController();
  const stopSecond = new AbortController();
  const a = first(stopFirst.signal);
  const b = second(stopSecond.signal);
  const settled = Promise.allSettled([a, b]).then(() => undefined);
  return new Promise((resolve) => {
    let failed = false;
    const onFailure = (which: 'first' | 'second', other: AbortController) => (error: unknown): void => {
      if (failed) return;
      failed = true;
      other.abort(error);
      resolve({ ok: false, error, failed: which, settled });
    };
    a.catch(onFailure('first', stopSecond));
    b.catch(onFailure('second', stopFirst));
    Promise.all([a, b]).then(
      (values) => resolve({ ok: true, values }),
      () => {}, // reported by onFailure
    );
  });
}
