import { describe, expect, it } from 'vitest';
import { CloudApi, CloudCallError, type CloudErrorKind } from '../../src/backend/cloud-api.js';
import { testBackendContext } from '../helpers/backend-context.js';

class FakeSdkError extends Error {
  constructor(readonly kind: CloudErrorKind) {
    super(`sdk says ${kind}`);
  }
}

function api(overrides: { maxCalls?: number; intervalMs?: number } = {}) {
  const context = testBackendContext();
  const cloud = new CloudApi({
    backend: 'test',
    maxCalls: overrides.maxCalls ?? 0,
    intervalMs: overrides.intervalMs ?? 1000,
    classify: (err) => (err instanceof FakeSdkError ? err.kind : 'fatal'),
    metrics: context.metrics,
    logger: context.logger,
    minDelayMs: 1,
    maxDelayMs: 2,
  });
  return { cloud, apiCalls: context.apiCalls };
}

/** An SDK call that fails with `failures` in turn, then returns 'done'. */
function flaky(...failures: CloudErrorKind[]): { fn: () => Promise<string>; calls: () => number } {
  let calls = 0;
  return {
    fn: async () => {
      const failure = failures[calls++];
      if (failure) throw new FakeSdkError(failure);
      return 'done';
    },
    calls: () => calls,
  };
}

const never = new AbortController().signal;

describe('CloudApi', () => {
  it('retries throttling and transient errors, counting each call by outcome', async () => {
    const { cloud, apiCalls } = api();
    const sdk = flaky('throttled', 'transient', 'throttled');
    await expect(cloud.call('instances.insert', sdk.fn, never)).resolves.toBe('done');
    expect(sdk.calls()).toBe(4);
    expect(apiCalls.map((c) => c.outcome)).toEqual(['throttled', 'error', 'throttled', 'ok']);
    expect(apiCalls.every((c) => c.operation === 'instances.insert')).toBe(true);
  });

  it.each<CloudErrorKind>(['quota', 'capacity', 'not-found', 'fatal'])('does not retry a %s error, and says which it was', async (kind) => {
    const { cloud } = api();
    const sdk = flaky(kind);
    const error = await cloud.call('instances.insert', sdk.fn, never).catch((err: unknown) => err);
    expect(error).toBeInstanceOf(CloudCallError);
    expect((error as CloudCallError).kind).toBe(kind);
    expect((error as CloudCallError).message).toContain(`instances.insert failed (${kind})`);
    expect(sdk.calls()).toBe(1);
  });

  it('gives up after the retries, with the last error', async () => {
    const { cloud } = api();
    const sdk = flaky(...Array<CloudErrorKind>(20).fill('transient'));
    const error = await cloud.call('op', sdk.fn, never).catch((err: unknown) => err);
    expect((error as CloudCallError).kind).toBe('transient');
    expect(sdk.calls()).toBe(9);
  });

  it('rethrows the signal reason when aborted, also while waiting for a rate-limit slot', async () => {
    const { cloud } = api({ maxCalls: 1, intervalMs: 60_000 });
    await cloud.call('first', async () => 'ok', never);
    const stop = new AbortController();
    const waiting = cloud.call('second', async () => 'too late', stop.signal);
    stop.abort(new Error('job cancelled'));
    await expect(waiting).rejects.toThrow('job cancelled');
  });
});
