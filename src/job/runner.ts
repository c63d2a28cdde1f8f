/**
 * The pool's job runner: one job through the step pipeline (run-job.ts)
 * with the worker's parts, telling the circuit breaker how the instance
 * start went: a ready instance is a working start (as soon as it is
 * ready), a run that ended as a start failure (breaker.ts says which) is a
 * failed one.
 */
import type { Tracer } from '@opentelemetry/api';
import { isStartFailure, type CircuitBreaker } from '../backend/breaker.js';
import type { Backend } from '../backend/contract.js';
import type { WorkerConfig } from '../config/types.js';
import type { Logger } from '../logger.js';
import type { RunJob } from '../processor.js';
import type { WorkerMetrics } from '../telemetry/metrics.js';
import { REVISION, VERSION } from '../version.js';
import type { CancelRegistry } from './cancels.js';
import { RequeueCounter } from './requeues.js';
import type { JobResult } from './outcome.js';
import { runJob } from './run-job.js';
import { createScriptGenerator } from './script.js';

/** Emitted after each job is settled (its delivery acknowledged or abandoned). */
export interface JobDone {
  jobId: number;
  processorId: string;
  result: JobResult;
}

export interface JobRunnerParts {
  config: WorkerConfig;
  logger: Logger;
  backend: Backend;
  metrics: WorkerMetrics;
  tracer: Tracer;
  /** The queue's name (`amqp`, `file`), for the job's spans and logs. */
  queueType: string;
  breaker: CircuitBreaker;
  cancels: CancelRegistry;
  /** Aborts when running jobs must stop (and be requeued). */
  shutdown: AbortSignal;
  /** Called after each job is settled. */
  onDone: (done: JobDone) => void;
  /** Fetch each job's script before starting its instance instead of both at once (run-job.ts). */
  sequentialStart?: boolean;
}

export function createJobRunner(parts: JobRunnerParts): RunJob {
  const { config, logger, breaker } = parts;
  const scripts = createScriptGenerator(config.buildApi, logger);
  const requeues = new RequeueCounter(config.requeueLimit);
  return async (job, processorId) => {
    const result = await runJob(job, processorId, {
      config,
      backend: parts.backend,
      scripts,
      cancels: parts.cancels,
      requeues,
      shutdown: parts.shutdown,
      logger,
      version: `mayfly ${VERSION}`,
      revision: REVISION,
      queueType: parts.queueType,
      metrics: parts.metrics,
      tracer: parts.tracer,
      onInstanceReady: () => breaker.recordSuccess(),
      sequentialStart: parts.sequentialStart === true,
    });
    if (isStartFailure(result)) breaker.recordFailure(result.cause);
    parts.onDone({ jobId: job.payload.jobId, processorId, result });
    return result;
  };
}
