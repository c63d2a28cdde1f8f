/**
 * The orphan reaper (docs/operations.md, "Orphaned instances"): now and then, list the instances carrying
 * mayfly's labels (`Backend.listManaged`) and destroy those no job can be
 * using any more:
 *
 * - its lease has expired (any worker's): it has outlived the longest job
 *   it could be running, so its worker died or failed to delete it;
 * - it was made by a worker with this worker's host name, no job of this
 *   process holds it, and it is older than the grace period: an earlier run
 *   of this worker was killed (kill -9, OOM, power) before it could delete
 *   it. (Host names must be unique among live workers; they already are,
 *   since processor ids and log lines are built from them.)
 *
 * An instance a job here holds, or one a start here is still bringing up,
 * is never taken. What `listManaged` does not return (no mayfly labels) is
 * never even seen. A pass never throws: failures are logged and counted,
 * and the next pass tries again.
 */
import type { Backend, ManagedInstance } from '../backend/contract.js';
import { errorMessage } from '../errors.js';
import type { Logger } from '../logger.js';
import type { ReapReason, WorkerMetrics } from '../telemetry/metrics.js';
import type { HeldInstances } from './held.js';

/** One destroy may take this long (a cloud delete with its polling); then the next pass tries again. */
const DESTROY_TIMEOUT_MS = 5 * 60_000;

export interface ReapContext {
  /** This worker's host name (`TRAVIS_WORKER_HOSTNAME`). */
  hostname: string;
  /** Now, in ms since the epoch. */
  now: number;
  /** An unclaimed instance of this worker younger than this (ms) may be a start in flight: left alone. */
  graceMs: number;
  held: Pick<HeldInstances, 'holds' | 'starting'>;
}

/** Why `instance` must go, or undefined when it may be in use. */
export function reapReason(instance: ManagedInstance, context: ReapContext): ReapReason | undefined {
  if (context.held.holds(instance.id)) return undefined;
  if (instance.leaseExpiresAt !== undefined && instance.leaseExpiresAt.getTime() <= context.now) return 'lease-expired';
  if (instance.worker !== context.hostname) return undefined;
  if (instance.jobId !== undefined && context.held.starting(instance.jobId)) return undefined;
  // Without a creation time its age is unknown: it could be a start in flight.
  if (instance.createdAt === undefined || context.now - instance.createdAt.getTime() < context.graceMs) return undefined;
  return 'orphaned';
}

/** What one pass did. */
export interface ReapSummary {
  /** Instances with mayfly's labels found (undefined when listing failed). */
  listed: number | undefined;
  reaped: { id: string; reason: ReapReason }[];
  /** Instances that should have gone but could not be destroyed. */
  failed: string[];
}

export interface ReaperOptions {
  /** The backend, with `listManaged` and `destroyManaged`. */
  backend: Required<Pick<Backend, 'listManaged' | 'destroyManaged'>>;
  held: HeldInstances;
  hostname: string;
  /** Between the end of one pass and the start of the next, in ms. */
  intervalMs: number;
  graceMs: number;
  logger: Logger;
  metrics: Pick<WorkerMetrics, 'reaped' | 'reaperFailed'>;
}

/** One pass: list, decide, destroy. Never throws; stops early when `signal` aborts. */
export async function reapOnce(options: ReaperOptions, signal: AbortSignal): Promise<ReapSummary> {
  const { backend, logger, metrics } = options;
  const summary: ReapSummary = { listed: undefined, reaped: [], failed: [] };
  let found: ManagedInstance[];
  try {
    found = await backend.listManaged(signal);
  } catch (err) {
    if (!signal.aborted) {
      metrics.reaperFailed('list');
      logger.warn({ err: errorMessage(err) }, 'reaper: could not list instances; trying again next pass');
    }
    return summary;
  }
  summary.listed = found.length;
  // Read after listing: a job that started before the listing is held by now, or is still starting.
  const context: ReapContext = { hostname: options.hostname, now: Date.now(), graceMs: options.graceMs, held: options.held };
  for (const instance of found) {
    if (signal.aborted) break;
    const reason = reapReason(instance, context);
    if (reason === undefined) continue;
    const fields = {
      instance: instance.id,
      reason,
      job_id: instance.jobId,
      instance_worker: instance.worker,
      lease_expires_at: instance.leaseExpiresAt?.toISOString(),
      created_at: instance.createdAt?.toISOString(),
    };
    try {
      await backend.destroyManaged(instance.id, AbortSignal.any([signal, AbortSignal.timeout(DESTROY_TIMEOUT_MS)]));
      summary.reaped.push({ id: instance.id, reason });
      metrics.reaped(reason);
      logger.info(
        fields,
        reason === 'lease-expired'
          ? 'reaper: destroyed an instance whose lease had expired'
          : 'reaper: destroyed an instance an earlier run of this worker left behind',
      );
    } catch (err) {
      if (signal.aborted) break;
      summary.failed.push(instance.id);
      metrics.reaperFailed('destroy');
      logger.warn({ ...fields, err: errorMessage(err) }, 'reaper: could not destroy an orphaned instance; trying again next pass');
    }
  }
  if (summary.reaped.length > 0 || summary.failed.length > 0) {
    logger.info({ listed: summary.listed, reaped: summary.reaped.length, failed: summary.failed.length }, 'reaper pass done');
  }
  return summary;
}

/** A running reaper. */
export interface Reaper {
  /** The pass made at startup. */
  readonly firstPass: Promise<ReapSummary>;
  /** Stop: no pass starts any more, the one under way is aborted. Resolves when it has ended. */
  stop(): Promise<void>;
}

/** Pass once now, then every `intervalMs` after each pass ends (passes never overlap), until `stop`. */
export function startReaper(options: ReaperOptions): Reaper {
  const stopping = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  let current: Promise<unknown> = Promise.resolve();
  const pass = (): Promise<ReapSummary> => {
    const running = reapOnce(options, stopping.signal).then((summary) => {
      if (!stopping.signal.aborted) timer = setTimeout(() => void pass(), options.intervalMs);
      return summary;
    });
    current = running;
    return running;
  };
  options.logger.info({ interval_ms: options.intervalMs, grace_ms: options.graceMs }, 'reaper started');
  const firstPass = pass();
  return {
    firstPass,
    async stop() {
      stopping.abort(new Error('the worker is stopping'));
      clearTimeout(timer);
      await current;
      clearTimeout(timer);
    },
  };
}
