/**
 * The warm pool from the settings (`TRAVIS_WORKER_WARM_POOL_*`), around the
 * backend the jobs use; none when its size is 0.
 */
import type { CircuitBreaker } from '../backend/breaker.js';
import type { Backend } from '../backend/contract.js';
import type { WorkerConfig } from '../config/types.js';
import { ConfigError } from '../errors.js';
import { defaultStartAttributes } from '../job/start-attributes.js';
import type { Logger } from '../logger.js';
import type { WorkerMetrics } from '../telemetry/metrics.js';
import { WarmPool } from './pool.js';

export interface WarmPoolParts {
  config: WorkerConfig;
  /** The backend as jobs would use it, wrapped by `HeldInstances`. */
  backend: Backend;
  breaker: CircuitBreaker;
  logger: Logger;
  metrics: WorkerMetrics;
}

/** The pool, or undefined when `TRAVIS_WORKER_WARM_POOL_SIZE` is 0. Throws `ConfigError` for a backend that cannot tell machine shapes. */
export function createWarmPool({ config, backend, breaker, logger, metrics }: WarmPoolParts): WarmPool | undefined {
  const { size, mode, maxAgeMs, windowMs } = config.warmPool;
  if (size === 0) return undefined;
  if (!tellsShapes(backend)) {
    throw new ConfigError(
      `TRAVIS_WORKER_WARM_POOL_SIZE: the ${config.providerName} backend cannot boot machines ahead of jobs (it does not tell machine shapes); set it to 0`,
    );
  }
  const { hardMs, startupMs, scriptUploadMs } = config.timeouts;
  logger.info({ size, mode, max_age_ms: maxAgeMs, window_ms: windowMs }, 'warm pool on');
  return new WarmPool({
    backend,
    size,
    mode,
    maxAgeMs,
    windowMs,
    hardTimeoutMs: hardMs,
    // A job would be given this long to start and take its script; a pool boot is given the same.
    bootTimeoutMs: startupMs + scriptUploadMs,
    defaults: defaultStartAttributes(config.defaults, hardMs),
    breaker,
    logger: logger.child({ warm_pool: mode }),
    metrics: metrics.warmPool,
    recordPhase: (phase, durationMs) => metrics.bootPhase(phase, durationMs),
  });
}

function tellsShapes(backend: Backend): backend is Backend & Required<Pick<Backend, 'shape'>> {
  return backend.shape !== undefined;
}
