/**
 * The worker's status as `GET /worker` answers it and SIGUSR1 logs it:
 * travis-ci/worker's `workerInfo` fields (remote_controller.go) so existing
 * tooling keeps reading them, plus the lifecycle state.
 */
import { formatGoDuration } from '../config/formats.js';
import type { ProcessorStatus } from '../processor.js';
import type { WarmPoolStatus } from '../warm-pool/types.js';
import type { WorkerState } from './state.js';

export interface ProcessorInfo {
  id: string;
  processed: number;
  /** The processor's state: starting, waiting, processing, paused, stopping, stopped. */
  status: string;
  /** The last job it took (0 before the first, as travis). */
  lastJobId: number;
  /** The job it is running now, if any. */
  currentJobId?: number;
}

export interface WorkerStatus {
  version: string;
  /** The commit of this build, `?` when unknown (travis' `revision`). */
  revision: string;
  /** When this build was made, ISO 8601, `?` when unknown (travis' `generated`). */
  generated: string;
  /** Since the worker started, the Go way (`1h2m3.5s`), as travis. */
  uptime: string;
  uptimeSeconds: number;
  state: WorkerState;
  /** Processors alive, including removed ones finishing their last job (travis' `poolSize`). */
  poolSize: number;
  /** Processors the pool is meant to have (travis' `expectedPoolSize`). */
  expectedPoolSize: number;
  totalProcessed: number;
  processors: ProcessorInfo[];
  /** The warm pool, when there is one (mayfly only): idle instances per shape with their ages, boots in flight. */
  warmPool?: WarmPoolStatus;
}

export function buildStatus(input: {
  version: string;
  revision: string;
  generated: string;
  startedAt: number;
  state: WorkerState;
  expectedPoolSize: number;
  totalProcessed: number;
  processors: ProcessorStatus[];
  warmPool?: WarmPoolStatus | undefined;
}): WorkerStatus {
  const uptimeMs = Date.now() - input.startedAt;
  return {
    version: input.version,
    revision: input.revision,
    generated: input.generated,
    uptime: formatGoDuration(uptimeMs),
    uptimeSeconds: Math.floor(uptimeMs / 1000),
    state: input.state,
    poolSize: input.processors.filter((p) => p.state !== 'stopped').length,
    expectedPoolSize: input.expectedPoolSize,
    totalProcessed: input.totalProcessed,
    processors: input.processors.map((p) => ({
      id: p.id,
      processed: p.processed,
      status: p.state,
      lastJobId: p.lastJobId ?? 0,
      ...(p.jobId === undefined ? {} : { currentJobId: p.jobId }),
    })),
    ...(input.warmPool === undefined ? {} : { warmPool: input.warmPool }),
  };
}

/** The status as the fields of one worker log line (SIGUSR1, and when the worker stops). */
export function statusLogFields(status: WorkerStatus): Record<string, unknown> {
  return {
    version: status.version,
    state: status.state,
    uptime_s: status.uptimeSeconds,
    pool_size: status.expectedPoolSize,
    processed: status.totalProcessed,
    processors: status.processors.map((p) => ({ id: p.id, state: p.status, job_id: p.currentJobId ?? null, processed: p.processed })),
  };
}
