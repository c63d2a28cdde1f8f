/**
 * The pool's job runner: one job through the step pipeline (run-job.ts)
 * with the worker's parts, telling the circuit breaker how the instance
 * start went: a ready instance is a working start, a job requeued for a
 * start failure before its instance was ready is a failed one.
 */
import type { Tracer } from '@opentelemetry/api';
import { isStartFailure, type CircuitBreaker } from '../backend/breaker.js';
import type { Backend } from '../backend/contract.js';
import type { WorkerConfig } from '../config/types.js';
import type { Logger } from '../logger.js';
import type { RunJob } from '../pool.js';
import type { WorkerMetrics } from '../telemetry/metrics.js';
import { VERSION } from '../version.js';
import type { CancelRegistry } from './cancels.js';
import { RequeueCounter } from './requeues.js';
import { runJob, type JobResult } from './run-job.js';
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
}

export function createJobRunner(parts: JobRunnerParts): RunJob {
  const { config, logger, breaker } = parts;
  const scripts = createScriptGenerator(config.buildApi, logger);
  const requeues = new RequeueCounter(config.requeueLimit);
  return async (job, processorId) => {
    let instanceReady = false;
    const result = await runJob(job, processorId, {
      config,
      backend: parts.backend,
      scripts,
      cancels: parts.cancels,
      requeues,
      shutdown: parts.shutdown,
      logger,
      version: `mayfly ${VERSION}`,
      queueType: parts.queueType,
      metrics: parts.metrics,
      tracer: parts.tracer,
      onInstanceReady: () => {
        instanceReady = true;
        breaker.recordSuccess();
      },
    });
    if (!instanceReady && result.outcome === 'requeued' && isStartFailure(result.reason)) breaker.recordFailure(result.reason);
    parts.onDone({ jobId: job.payload.jobId, processorId, result });
    return result;
  };
}
