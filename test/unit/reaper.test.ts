/**
 * The reaper's rules, on instances described as a backend lists them, and
 * one pass against an in-memory backend: what it destroys, what it never
 * touches, and that a failing backend does not make it throw.
 */
import { describe, expect, it } from 'vitest';
import type { Backend, Instance, ManagedInstance } from '../../src/backend/contract.js';
import { silentLogger } from '../../src/logger.js';
import { HeldInstances } from '../../src/reaper/held.js';
import { reapOnce, reapReason, type ReapContext } from '../../src/reaper/reaper.js';
import type { ReapReason } from '../../src/telemetry/metrics.js';
import { testAttributes } from '../helpers/attributes.js';

const NOW = Date.parse('2026-11-22T12:00:00Z');
const MINUTE = 60_000;
const at = (offsetMs: number): Date => new Date(NOW + offsetMs);

function context(held: Partial<ReapContext['held']> = {}): ReapContext {
  return {
    hostname: 'worker-1',
    now: NOW,
    graceMs: 10 * MINUTE,
    held: { holds: () => false, starting: () => false, ...held },
  };
}

describe('reapReason', () => {
  it('takes any worker\'s instance whose lease has expired', () => {
    expect(reapReason({ id: 'a', worker: 'worker-2', jobId: 1, leaseExpiresAt: at(-1), createdAt: at(-60 * MINUTE) }, context())).toBe('lease-expired');
  });

  it('leaves another worker\'s instance with a live lease, however old', () => {
    expect(reapReason({ id: 'a', worker: 'worker-2', jobId: 1, leaseExpiresAt: at(MINUTE), createdAt: at(-600 * MINUTE) }, context())).toBeUndefined();
  });

  it('takes an instance of this worker that no job here holds, once past the grace period', () => {
    const instance: ManagedInstance = { id: 'a', worker: 'worker-1', jobId: 7, leaseExpiresAt: at(30 * MINUTE), createdAt: at(-11 * MINUTE) };
    expect(reapReason(instance, context())).toBe('orphaned');
    expect(reapReason({ ...instance, createdAt: at(-9 * MINUTE) }, context())).toBeUndefined();
    expect(reapReason({ ...instance, createdAt: undefined } as unknown as ManagedInstance, context())).toBeUndefined();
  });

  it('never takes an instance a job here holds, or one of a job still starting here', () => {
    const instance: ManagedInstance = { id: 'a', worker: 'worker-1', jobId: 7, leaseExpiresAt: at(-MINUTE), createdAt: at(-600 * MINUTE) };
    expect(reapReason(instance, context({ holds: (id) => id === 'a' }))).toBeUndefined();
    expect(reapReason({ ...instance, leaseExpiresAt: at(MINUTE) }, context({ starting: (jobId) => jobId === 7 }))).toBeUndefined();
  });
});

/** A backend whose listing is `instances`; destroying removes from it (or fails for ids in `failing`). */
function memoryBackend(instances: ManagedInstance[], failing = new Set<string>()): Backend & { destroyed: string[] } {
  const destroyed: string[] = [];
  return {
    destroyed,
    async start() {
      const instance: Instance = {
        id: 'held-1',
        imageName: 'memory',
        startupMs: 0,
        async upload() {},
        async run() {
          return { exitCode: 0 };
        },
        async destroy() {},
      };
      return instance;
    },
    async close() {},
    async listManaged() {
      return [...instances];
    },
    async destroyManaged(id) {
      if (failing.has(id)) throw new Error(`cannot destroy ${id}`);
      destroyed.push(id);
    },
  };
}

/** The reaper half of a backend that has it. */
function managed(backend: Backend): { listManaged: NonNullable<Backend['listManaged']>; destroyManaged: NonNullable<Backend['destroyManaged']> } {
  const { listManaged, destroyManaged } = backend;
  if (!listManaged || !destroyManaged) throw new Error('the backend cannot list its instances');
  return { listManaged, destroyManaged };
}

const startOptions = () => ({ signal: new AbortController().signal, progress: () => {}, logger: silentLogger, recordPhase: () => {} });

describe('reapOnce', () => {
  const hour = 60 * MINUTE;
  const listing = (): ManagedInstance[] => [
    { id: 'expired', worker: 'worker-2', jobId: 1, leaseExpiresAt: new Date(Date.now() - MINUTE), createdAt: new Date(Date.now() - 2 * hour) },
    { id: 'live-other', worker: 'worker-2', jobId: 2, leaseExpiresAt: new Date(Date.now() + hour), createdAt: new Date(Date.now() - 2 * hour) },
    { id: 'mine-orphan', worker: 'worker-1', jobId: 3, leaseExpiresAt: new Date(Date.now() + hour), createdAt: new Date(Date.now() - 2 * hour) },
    { id: 'held-1', worker: 'worker-1', jobId: 4, leaseExpiresAt: new Date(Date.now() + hour), createdAt: new Date(Date.now() - 2 * hour) },
  ];

  it('destroys the expired and the orphaned, counts them, and leaves what a job here holds', async () => {
    const backend = memoryBackend(listing());
    const held = new HeldInstances();
    const wrapped = held.wrap(backend);
    await wrapped.start(testAttributes({ jobId: 4 }), startOptions());
    const reasons: ReapReason[] = [];
    const summary = await reapOnce(
      {
        backend: managed(wrapped),
        held,
        hostname: 'worker-1',
        intervalMs: 1,
        graceMs: 10 * MINUTE,
        logger: silentLogger,
        metrics: { reaped: (reason) => reasons.push(reason), reaperFailed: () => {} },
      },
      new AbortController().signal,
    );
    expect(summary).toEqual({
      listed: 4,
      reaped: [
        { id: 'expired', reason: 'lease-expired' },
        { id: 'mine-orphan', reason: 'orphaned' },
      ],
      failed: [],
    });
    expect(backend.destroyed).toEqual(['expired', 'mine-orphan']);
    expect(reasons).toEqual(['lease-expired', 'orphaned']);
  });

  it('lets go of an instance once its job destroyed it', async () => {
    const held = new HeldInstances();
    const wrapped = held.wrap(memoryBackend([]));
    const instance = await wrapped.start(testAttributes({ jobId: 4 }), startOptions());
    expect(held.holds('held-1')).toBe(true);
    await instance.destroy();
    expect(held.holds('held-1')).toBe(false);
  });

  it('never throws: a failed listing or destroy is counted and the pass goes on', async () => {
    const failures: string[] = [];
    const metrics = { reaped: () => {}, reaperFailed: (operation: 'list' | 'destroy') => failures.push(operation) };
    const options = { held: new HeldInstances(), hostname: 'worker-1', intervalMs: 1, graceMs: 0, logger: silentLogger, metrics };
    const broken = {
      listManaged: () => Promise.reject(new Error('API down')),
      destroyManaged: () => Promise.resolve(),
    };
    expect(await reapOnce({ ...options, backend: broken }, new AbortController().signal)).toEqual({ listed: undefined, reaped: [], failed: [] });
    const backend = memoryBackend(listing(), new Set(['expired']));
    const summary = await reapOnce(
      { ...options, backend: managed(backend) },
      new AbortController().signal,
    );
    expect(summary.failed).toEqual(['expired']);
    expect(summary.reaped.map((r) => r.id)).toEqual(['mine-orphan', 'held-1']);
    expect(failures).toEqual(['list', 'destroy']);
  });
});
