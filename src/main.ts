/**
 * The composition root: config -> telemetry -> queue -> backend (and its
 * reaper) -> worker -> listeners -> start hook -> pool -> heartbeat. The
 * only module that knows every part; `startWorker` is also what the
 * end-to-end tests run, in-process. Signals are wired by the executable
 * (bin/mayfly.ts, `handleSignals`), so tests can call the same
 * `drain`/`pause`/... directly.
 *
 * Everything started is registered as a releaser; the worker releases them
 * last-in first-out when it stops, or they are released at once if startup
 * fails halfway.
 */
import type { Tracer } from '@opentelemetry/api';
import type { BackendDefinition } from './backend/contract.js';
import type { WorkerConfig } from './config/types.js';
import { ConfigError } from './errors.js';
import type { Logger } from './logger.js';
import { startControlServer } from './control/routes.js';
import { startDebugServer } from './debug/server.js';
import { watchHeartbeat } from './lifecycle/heartbeat.js';
import { runHook } from './lifecycle/hooks.js';
import { HeldInstances } from './reaper/held.js';
import { startReaper, type Reaper } from './reaper/reaper.js';
import { createQueue } from './queue/create.js';
import { Releasers } from './releasers.js';
import { createPrometheusMetrics, noopMetrics, type WorkerMetrics } from './telemetry/metrics.js';
import { startTracing } from './telemetry/tracing.js';
import { Worker } from './worker.js';

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
    const metrics = options.metrics ?? (served ? createPrometheusMetrics({ backend: definition.name, queue: config.queueType }) : noopMetrics);
    releasers.add('metrics', () => metrics.shutdown());

    const queue = createQueue(config, logger);
    await queue.open();
    releasers.add('the queue', () => queue.close());

    const held = new HeldInstances();
    const backendLogger = logger.child({ backend: definition.name });
    const backend = held.wrap(definition.create(config.backendSettings, { logger: backendLogger, hostname: config.hostname, metrics: metrics.backend }));
    releasers.add('the backend', () => backend.close());

    let reaper: Reaper | undefined;
    const { listManaged, destroyManaged } = backend;
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

    const worker = new Worker({ config, logger, queue, backend, metrics, tracer, reaper, releasers, sequentialStart: options.sequentialStart === true });
    metrics.observe({
      state: () => worker.state,
      poolSize: () => worker.pool.size,
      processors: () => worker.pool.counts(),
      brokerConnected: () => queue.notReadyReason() === undefined,
      brokerNodes: () => queue.brokerNodes?.() ?? {},
      breakerOpen: () => worker.breaker.state !== 'closed',
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
