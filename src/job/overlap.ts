/**
 * Two steps of a job run at once (the build script and the instance start):
 * each gets a signal that aborts when the other fails, so no time is spent
 * on a job that cannot go on.
 */

/** What `both` settles with: the values of both, or the failure that came first. */
export type BothOutcome<A, B> = { ok: true; values: [A, B] } | { ok: false; error: unknown; failed: 'first' | 'second' };

/**
 * Run `first` and `second` together. When one rejects, the other's signal
 * aborts (with that error as its reason) and `both` waits for it to settle,
 * so whatever it made is known to the caller (who releases it) before
 * `both` returns. The first failure wins; the other's rejection, caused by
 * the abort, is dropped.
 */
export async function both<A, B>(
  first: (signal: AbortSignal) => Promise<A>,
  second: (signal: AbortSignal) => Promise<B>,
): Promise<BothOutcome<A, B>> {
  const stopFirst = new AbortController();
  const stopSecond = new AbortController();
  let failure: { error: unknown; failed: 'first' | 'second' } | undefined;
  const fail = (failed: 'first' | 'second', other: AbortController) => (error: unknown): never => {
    failure ??= { error, failed };
    other.abort(error);
    throw error;
  };
  const results = await Promise.allSettled([
    first(stopFirst.signal).catch(fail('first', stopSecond)),
    second(stopSecond.signal).catch(fail('second', stopFirst)),
  ]);
  if (failure !== undefined) return { ok: false, ...failure };
  const [a, b] = results as [PromiseFulfilledResult<A>, PromiseFulfilledResult<B>];
  return { ok: true, values: [a.value, b.value] };
}
