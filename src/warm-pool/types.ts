/**
 * The warm pool's types: its options, the breaker as it sees it, its events,
 * and its status as `GET /worker` shows it.
 */
import type { BreakerEvents, BreakerState, StartFailureCode } from '../backend/breaker.js';
import type { Backend, BootPhase, StartAttributes } from '../backend/contract.js';
import type { Logger } from '../logger.js';
import type { WarmPoolMetrics } from '../telemetry/metrics.js';
import type { WarmPoolMode } from './demand.js';

/** Why an idle instance was destroyed without serving a job (`dead`: it no longer answered when a job came for it). */
export type EvictReason = 'age' | 'image' | 'surplus' | 'capacity' | 'drain' | 'dead';

/** What the pool asks of the circuit breaker (src/backend/breaker.ts): whether to boot, and to hear how boots went. */
export interface BootGate {
  readonly state: BreakerState;
  recordFailure(code: StartFailureCode): void;
  recordSuccess(): void;
  on(event: 'close', listener: (...args: BreakerEvents['close']) => void): unknown;
}

export interface WarmPoolEvents {
  /** An instance passed its probe and joined the pool. */
  ready: [id: string, shape: string];
  /** An idle instance left the pool without serving a job; `destroyed` once it is gone. */
  evicted: [id: string, reason: EvictReason];
  /** A pool boot failed at `stage`; what it made is destroyed. */
  'boot-failed': [stage: 'start' | 'probe', err: unknown];
  /** A pass over the pool (evict, boot what is missing) ended. */
  reconciled: [];
}

export interface WarmPoolOptions {
  /** The backend it boots on and falls back to, already wrapped by `HeldInstances`. Must have `shape`. */
  backend: Backend & Required<Pick<Backend, 'shape'>>;
  /** Most instances idle and booting at once (`TRAVIS_WORKER_WARM_POOL_SIZE`). */
  size: number;
  mode: WarmPoolMode;
  /** An idle instance older than this (since its boot began), in ms, is replaced. */
  maxAgeMs: number;
  /** Adaptive mode: how long a job counts towards the demand for its shape, in ms. */
  windowMs: number;
  /** The hard timeout jobs get (`TRAVIS_WORKER_HARD_TIMEOUT`), in ms: a warm instance's lease covers it after `maxAgeMs`. */
  hardTimeoutMs: number;
  /** One boot, its probe included, may take this long, in ms. */
  bootTimeoutMs: number;
  /** Fixed mode: a job that asks for nothing special, so the pool is warm before the first job. */
  defaults?: StartAttributes;
  breaker: BootGate;
  logger: Logger;
  metrics: WarmPoolMetrics;
  recordPhase: (phase: BootPhase, durationMs: number) => void;
  /** Between freshness checks, in ms; default `FRESHNESS_CHECK_MS`. */
  checkIntervalMs?: number;
  /** The first wait after a failed boot, in ms; default `BOOT_RETRY_MS`. */
  bootRetryMs?: number;
}

/** One idle instance, as `GET /worker` shows it. */
export interface WarmInstanceStatus {
  id: string;
  image: string;
  /** Since its boot began. */
  ageSeconds: number;
  /** Since it passed its probe. */
  idleSeconds: number;
}

/** The pool, as `GET /worker` shows it. */
export interface WarmPoolStatus {
  mode: WarmPoolMode;
  size: number;
  hits: number;
  misses: number;
  shapes: { shape: string; target: number; booting: number; idle: WarmInstanceStatus[] }[];
}
