/**
 * The composition root: config -> telemetry -> queue -> backend (its
 * startup checks, its reaper) -> worker -> listeners -> start hook -> pool
 * -> the cloud's notices and the host lifetime policy (src/fleet/) ->
 * heartbeat. The only module that knows every part; `startWorker` is also what the
 * end-to-end tests run, in-process. Signals are wired by the executable
 * (bin/mayfly.ts, `handleSignals`), so tests can call the same
 * `drain`/`pause`/... directly.
 *
 * Everything started is registered as a releaser; the worker releases them
 * last-in first-out when it stops, or they are released at once if startup
 * fails halfway.
 */
import type { Tracer } from '@opentelemetry/api';
import { CircuitBreaker } from './backend/breaker.js';
import type { BackendDefinition } from './backend/contract.js';
import type { WorkerConfig } from './config/types.js';
import { ConfigError } from './errors.js';
import type { Logger } from './logger.js';
import { startControlServer } from './control/routes.js';
import { startDebugServer } from './debug/server.js';
import { HostFleet } from './fleet/host.js';
import { leaveGroupWhenLifetimeEnds } from './fleet/leave-group.js';
import { watchLifetime } from './fleet/lifetime.js';
import { watchHeartbeat } from './lifecycle/heartbeat.js';
import { runHook } from './lifecycle/hooks.js';
import { HeldInstances } from './reaper/held.js';
import { startReaper, type Reaper } from './reaper/reaper.js';
import { createQueue } from './queue/create.js';
import { Releasers } from './releasers.js';
import { createPrometheusMetrics, noopMetrics, type WorkerMetrics } from './telemetry/metrics.js';
import { startTracing } from './telemetry/tracing.js';
import { createWarmPool } from './warm-pool/create.js';
import { Worker } from './worker.js';

/**
 * How long a backend's startup checks (`Backend.ready`: a metadata server,
 * an API call or two, each with its own retries) may hold startup before it
 * fails instead of hanging.
 */
const BACKEND_READY_TIMEOUT_MS = 2 * 60_000;

/** What tests (and embedders) may supply instead of what the config would make. */
export interface StartWorkerOptions {
  /** A tracer for the jobs' spans (tests pass one with an in-memory exporter); else OTLP per config, or none. */
  tracer?: Tracer;
  /** Metrics to record into; else Prometheus metrics when a listener serves them, or none. */
  metrics?: WorkerMetrics;
  /** Fetch each job's script before starting its instance (as travis does), not both at once: the bench's same-run baseline. */
  sequentialStart?: boolean;
}

export async function startWorker(
  config: WorkerConfig,
  backends: readonly BackendDefinition<any>[], // eslint-disable-line @typescript-eslint/no-explicit-any
  logger: Logger,
  options: StartWorkerOptions = {},
): Promise<Worker> {
  const definition = backends.find((b) => b.name === config.providerName);
  if (!definition) throw new ConfigError(`TRAVIS_WORKER_PROVIDER_NAME: unknown backend "${config.providerName}"`);

  const releasers = new Releasers(logger);
  try {
    let tracer = options.tracer;
    if (!tracer) {
      const tracing = await startTracing(config.telemetry.otlpEndpoint, logger);
      releasers.add('tracing', () => tracing.shutdown());
      tracer = tracing.tracer;
    }
    const served = config.control !== undefined || config.debug !== undefined;
    const otlp = config.telemetry.otlpEndpoint !== undefined;
    const metrics = options.metrics ?? (served || otlp ? createPrometheusMetrics({ backend: definition.name, queue: config.queueType }, { otlp }) : noopMetrics);
    releasers.add('metrics', () => metrics.shutdown());

    // The host in its cloud (its notices are watched once the worker runs, below).
    const fleet = new HostFleet({ settings: config.host, logger, metrics });
    const { lifecycleHook } = fleet;
    // Released after the queue and the backend: the group may terminate the host only once every job has settled and its instance is gone.
    if (lifecycleHook) releasers.add('the lifecycle hook', () => lifecycleHook.complete());

    const queue = createQueue(config, logger);
    await queue.open();
    releasers.add('the queue', () => queue.close());

    const breaker = new CircuitBreaker({ ...config.breaker, logger: logger.child({ backend: config.providerName }) });
    releasers.add('the circuit breaker', async () => breaker.dispose());

    const held = new HeldInstances();
    const backendLogger = logger.child({ backend: definition.name });
    const created = definition.create(config.backendSettings, { logger: backendLogger, hostname: config.hostname, metrics: metrics.backend });
    // The backend as it is closed: once there is a warm pool, the pool, which destroys its idle instances first.
    let closing: { close(): Promise<void> } = created;
    releasers.add('the backend', () => closing.close());
    const readyDeadline = AbortSignal.timeout(BACKEND_READY_TIMEOUT_MS);
    await created.ready?.(readyDeadline).catch((err: unknown) => {
      if (!readyDeadline.aborted) throw err;
      throw new Error(`the ${definition.name} backend's startup checks did not finish in ${BACKEND_READY_TIMEOUT_MS / 60_000} minutes`, { cause: err });
    });
    const made = held.wrap(created);
    // The warm pool wraps the held backend: its boots are held too, so the reaper spares them.
    const warmPool = createWarmPool({ config, backend: made, breaker, logger: backendLogger, metrics });
    const backend = warmPool ?? made;
    closing = backend;

    let reaper: Reaper | undefined;
    const { listManaged, destroyManaged } = made;
    if (config.reaper.intervalMs > 0 && listManaged && destroyManaged) {
      const running = startReaper({
        backend: { listManaged, destroyManaged },
        held,
        hostname: config.hostname,
        intervalMs: config.reaper.intervalMs,
        graceMs: config.reaper.graceMs,
        logger: backendLogger,
        metrics,
      });
      reaper = running;
      // Released before the backend closes: no reaper call outlives its client.
      releasers.add('the reaper', () => running.stop());
    }

    const worker = new Worker({ config, logger, queue, backend, metrics, tracer, reaper, breaker, warmPool, releasers, sequentialStart: options.sequentialStart === true });
    metrics.observe({
      ...(warmPool === undefined ? {} : { warmPool: () => warmPool.counts() }),
      state: () => worker.state,
      poolSize: () => worker.pool.size,
      processors: () => worker.pool.counts(),
      brokerConnected: () => queue.notReadyReason() === undefined,
      brokerNodes: () => worker.brokerNodes(),
      breakerOpen: () => worker.breaker.state !== 'closed',
      readyJobs: () => queue.readyJobs(),
    });
    if (config.control) {
      const { host, port } = config.control;
      worker.serve('control', await startControlServer({ host, port, auth: config.remoteAuth, worker, metrics: metrics.handle, logger }));
    }
    if (config.debug) {
      worker.serve('debug', await startDebugServer({ ...config.debug, auth: config.remoteAuth, metrics: metrics.handle, logger }));
    }

    /** Aborts when the worker stops: background loops (start hook, heartbeat) end. */
    const background = new AbortController();
    releasers.add('background loops', async () => background.abort());
    if (config.hooks.start) await runHook('start', config.hooks.start, logger, background.signal);
    await worker.start();
    fleet.watch(worker, background.signal);
    const lifetime = watchLifetime(config.lifetime, worker.lifetimeSubject(), logger, background.signal);
    leaveGroupWhenLifetimeEnds(config, lifetime, releasers, logger);
    // In the background: resolving the defaults' shape may wait on a cloud API, and startup must not.
    void warmPool?.fill();
    if (config.heartbeat) {
      void watchHeartbeat({ ...config.heartbeat, logger, signal: background.signal, onDown: () => worker.drain('heartbeat says down') });
    }
    return worker;
  } catch (err) {
    // Startup failed halfway: release what was made, newest first.
    await releasers.releaseAll();
    throw err;
  }
}
