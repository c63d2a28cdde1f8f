/**
 * The composition root: config -> telemetry -> queue -> backend ->
 * reaper -> breaker -> listeners -> start hook -> pool -> heartbeat. The only module that knows
 * every part; `startWorker` is also what the end-to-end tests run,
 * in-process. Signals are wired by the CLI (`handleSignals`), so tests can
 * call the same `drain`/`pause`/... directly.
 *
 * Everything started is registered as a releaser and released last-in
 * first-out when the worker stops, or at once if startup fails halfway.
 */
import { EventEmitter, setMaxListeners } from 'node:events';
import type { Tracer } from '@opentelemetry/api';
import { CircuitBreaker, isStartFailure } from './backend/breaker.js';
import type { BackendDefinition } from './backend/contract.js';
import type { WorkerConfig } from './config.js';
import { ConfigError, errorMessage } from './errors.js';
import type { Logger } from './logger.js';
import { AmqpJobQueue } from './amqp/queue.js';
import type { HttpListener } from './control/http.js';
import { startControlServer, type WorkerControl } from './control/routes.js';
import { startDebugServer } from './debug/server.js';
import { CancelRegistry } from './job/cancels.js';
import { runJob, type JobResult } from './job/run-job.js';
import { createScriptGenerator } from './job/script.js';
import { watchHeartbeat } from './lifecycle/heartbeat.js';
import { runHook } from './lifecycle/hooks.js';
import type { SignalControl } from './lifecycle/signals.js';
import { Lifecycle, type WorkerState } from './lifecycle/state.js';
import { buildStatus, type WorkerStatus } from './lifecycle/status.js';
import { ProcessorPool } from './pool.js';
import { HeldInstances } from './reaper/held.js';
import { startReaper, type Reaper } from './reaper/reaper.js';
import type { CancelCommand, JobQueue } from './queue/contract.js';
import { FileJobQueue } from './queue/file.js';
import { createPrometheusMetrics, noopMetrics, type WorkerMetrics } from './telemetry/metrics.js';
import { startTracing, type Tracing } from './telemetry/tracing.js';
import { VERSION } from './version.js';

/** Emitted after each job is settled (its delivery acknowledged or abandoned). */
export interface JobDone {
  jobId: number;
  processorId: string;
  result: JobResult;
}

export interface WorkerEvents {
  'job-done': [JobDone];
  /** A cancel command arrived: delivered to a running job or remembered for later. */
  cancel: [CancelCommand, 'delivered' | 'remembered'];
  /** The lifecycle moved (RUNNING -> PAUSED, ...). */
  state: [to: WorkerState, from: WorkerState];
}

export interface Worker extends WorkerControl, SignalControl {
  readonly pool: ProcessorPool;
  readonly events: EventEmitter<WorkerEvents>;
  readonly cancels: CancelRegistry;
  readonly state: WorkerState;
  readonly metrics: WorkerMetrics;
  /** Holds jobs back while the backend keeps failing to start instances. */
  readonly breaker: CircuitBreaker;
  /** The orphan reaper, when it runs (a backend that can list its instances, a non-zero interval). */
  readonly reaper: Reaper | undefined;
  /** The control API's base URL (`http://127.0.0.1:8080`), when it is served. */
  readonly controlUrl: string | undefined;
  /** The debug port's base URL, when it is served. */
  readonly debugUrl: string | undefined;
  /**
   * Stop taking jobs; running ones get `TRAVIS_WORKER_SHUTDOWN_TIMEOUT` to
   * finish, then what still runs is requeued and the worker stops. Calling
   * it again changes nothing; `stop` skips the rest of the wait.
   */
  drain(reason?: string): void;
  /** Stop taking jobs, requeue the running ones, release everything. Idempotent. */
  stop(reason?: string): Promise<void>;
  /** Resolves when the worker has stopped, by `stop()` or `drain()`. Losing the broker does not stop it: the queue reconnects. */
  readonly stopped: Promise<void>;
}

/** What tests (and embedders) may supply instead of what the config would make. */
export interface StartWorkerOptions {
  /** A tracer for the jobs' spans (tests pass one with an in-memory exporter); else OTLP per config, or none. */
  tracer?: Tracer;
  /** Metrics to record into; else Prometheus metrics when a listener serves them, or none. */
  metrics?: WorkerMetrics;
}

function createQueue(config: WorkerConfig, logger: Logger): JobQueue {
  if (config.queueType === 'file') {
    return new FileJobQueue({
      config: config.file,
      queueName: config.queueName,
      logger,
      payloadMaxBytes: config.payloadMaxBytes,
    });
  }
  return new AmqpJobQueue({
    config: config.amqp,
    queueName: config.queueName,
    logger,
    payloadMaxBytes: config.payloadMaxBytes,
    hostname: config.hostname,
  });
}

export async function startWorker(
  config: WorkerConfig,
  backends: readonly BackendDefinition<any>[], // eslint-disable-line @typescript-eslint/no-explicit-any
  logger: Logger,
  options: StartWorkerOptions = {},
): Promise<Worker> {
  const definition = backends.find((b) => b.name === config.providerName);
  if (!definition) throw new ConfigError(`TRAVIS_WORKER_PROVIDER_NAME: unknown backend "${config.providerName}"`);

  const lifecycle = new Lifecycle();
  const events = new EventEmitter<WorkerEvents>();
  lifecycle.on('change', (to, from) => {
    logger.info({ state: to, from }, 'worker state');
    events.emit('state', to, from);
  });
  /** Aborts when running jobs must stop (and be requeued). */
  const shutdown = new AbortController();
  // Every running job listens on it (one listener a job, up to POOL_SIZE, which may be hundreds).
  setMaxListeners(0, shutdown.signal);
  /** Aborts when the worker stops: background loops (heartbeat, hooks) end. */
  const background = new AbortController();
  const releasers: Array<{ name: string; release: () => Promise<void> }> = [];
  async function releaseAll(): Promise<void> {
    for (const { name, release } of releasers.splice(0).reverse()) {
      await release().catch((err: unknown) => logger.warn({ err: errorMessage(err) }, `releasing ${name} failed`));
    }
  }

  let finish!: () => void;
  const stopped = new Promise<void>((resolve) => (finish = resolve));

  try {
    const tracing: Tracing | undefined = options.tracer ? undefined : await startTracing(config.telemetry.otlpEndpoint, logger);
    if (tracing) releasers.push({ name: 'tracing', release: () => tracing.shutdown() });
    const tracer = options.tracer ?? (tracing as Tracing).tracer;
    const served = config.control !== undefined || config.debug !== undefined;
    const metrics = options.metrics ?? (served ? createPrometheusMetrics({ backend: definition.name, queue: config.queueType }) : noopMetrics);
    releasers.push({ name: 'metrics', release: () => metrics.shutdown() });

    const queue = createQueue(config, logger);
    await queue.open();
    releasers.push({ name: 'the queue', release: () => queue.close() });

    const held = new HeldInstances();
    const backend = held.wrap(
      definition.create(config.backendSettings, {
        logger: logger.child({ backend: definition.name }),
        hostname: config.hostname,
        metrics: metrics.backend,
      }),
    );
    releasers.push({ name: 'the backend', release: () => backend.close() });

    let reaper: Reaper | undefined;
    const { listManaged, destroyManaged } = backend;
    if (config.reaper.intervalMs > 0 && listManaged && destroyManaged) {
      const running = startReaper({
        backend: { listManaged, destroyManaged },
        held,
        hostname: config.hostname,
        intervalMs: config.reaper.intervalMs,
        graceMs: config.reaper.graceMs,
        logger: logger.child({ backend: definition.name }),
        metrics,
      });
      reaper = running;
      // Released before the backend closes: no reaper call outlives its client.
      releasers.push({ name: 'the reaper', release: () => running.stop() });
    }

    const breaker = new CircuitBreaker({ ...config.breaker, logger: logger.child({ backend: definition.name }) });
    releasers.push({ name: 'the circuit breaker', release: async () => breaker.dispose() });
    breaker.on('open', () => metrics.breakerOpened());

    const cancels = new CancelRegistry();
    queue.onCancel((command) => {
      const outcome = cancels.cancel(command);
      logger.info({ job_id: command.jobId, source: command.source, outcome }, 'cancel command');
      events.emit('cancel', command, outcome);
    });

    const scripts = createScriptGenerator(config.buildApi, logger);
    const pool = new ProcessorPool(
      queue,
      async (job, processorId) => {
        let instanceReady = false;
        const result = await runJob(job, processorId, {
          config,
          backend,
          scripts,
          cancels,
          shutdown: shutdown.signal,
          logger,
          version: `mayfly ${VERSION}`,
          queueType: queue.name,
          metrics,
          tracer,
          onInstanceReady: () => {
            instanceReady = true;
            breaker.recordSuccess();
          },
        });
        if (!instanceReady && result.outcome === 'requeued' && isStartFailure(result.reason)) breaker.recordFailure(result.reason);
        events.emit('job-done', { jobId: job.payload.jobId, processorId, result });
        return result;
      },
      logger,
      config.hostname,
    );
    // Released first on stop: stop taking jobs and let every job settle before anything else closes.
    releasers.push({ name: 'the pool', release: () => pool.stop() });
    // The breaker holds the pool with a pause of its own: an operator's pause outlives it.
    // While a broker is away a job taken could neither report nor log: take none (jobs running go on).
    queue.onReadinessChange((reason) => {
      if (reason === undefined) {
        pool.resume('broker');
        logger.info('the broker is back: taking jobs');
      } else {
        pool.pause('broker');
        metrics.brokerLost();
        logger.warn({ reason }, 'not taking jobs until the broker is back');
      }
    });
    breaker.on('open', () => pool.pause('breaker'));
    breaker.on('half-open', () => pool.admitTrial());
    breaker.on('close', () => pool.resume('breaker'));

    let drainTimer: NodeJS.Timeout | undefined;
    let stopping: Promise<void> | undefined;

    const status = (): WorkerStatus =>
      buildStatus({
        version: VERSION,
        startedAt: lifecycle.startedAt,
        state: lifecycle.state,
        expectedPoolSize: pool.size,
        totalProcessed: pool.processed,
        processors: pool.status(),
      });

    const self: Worker = {
      pool,
      events,
      cancels,
      metrics,
      breaker,
      reaper,
      stopped,
      controlUrl: undefined,
      debugUrl: undefined,
      get state() {
        return lifecycle.state;
      },
      status,
      ready: () => lifecycle.state === 'RUNNING' && queue.notReadyReason() === undefined && pool.size > 0 && breaker.state === 'closed',
      notReadyReason: () => queue.notReadyReason() ?? breaker.reason(),
      pause() {
        if (lifecycle.state === 'PAUSED') return;
        lifecycle.transition('PAUSED');
        pool.pause();
      },
      resume() {
        if (lifecycle.state === 'RUNNING') return;
        lifecycle.transition('RUNNING');
        pool.resume();
      },
      togglePause() {
        if (lifecycle.state === 'PAUSED') self.resume();
        else self.pause();
      },
      async resize(size) {
        lifecycle.assertActive('resize the pool');
        await pool.resize(size);
      },
      async increment() {
        lifecycle.assertActive('grow the pool');
        await pool.grow(1);
      },
      decrement() {
        lifecycle.assertActive('shrink the pool');
        if (pool.shrink(1) === 0) logger.info('the pool is already empty');
      },
      drain(reason = 'drain') {
        if (lifecycle.state !== 'RUNNING' && lifecycle.state !== 'PAUSED') {
          logger.info({ state: lifecycle.state, reason }, 'already stopping');
          return;
        }
        lifecycle.transition('DRAINING');
        const running = pool.status().filter((p) => p.jobId !== undefined).map((p) => p.jobId);
        logger.info(
          { reason, running_jobs: running, shutdown_timeout_ms: config.timeouts.shutdownMs },
          'draining: taking no more jobs; running jobs may finish within the shutdown timeout, then are requeued',
        );
        pool.stopTaking();
        drainTimer = setTimeout(() => {
          logger.warn({ shutdown_timeout_ms: config.timeouts.shutdownMs }, 'shutdown timeout passed: requeueing the jobs still running');
          void self.stop('shutdown timeout');
        }, config.timeouts.shutdownMs);
        void pool.settled().then(() => self.stop('drained'));
      },
      stop(reason = 'stop') {
        stopping ??= (async () => {
          clearTimeout(drainTimer);
          if (lifecycle.state !== 'STOPPING') lifecycle.transition('STOPPING');
          const running = pool.status().filter((p) => p.jobId !== undefined).map((p) => p.jobId);
          logger.info({ reason, requeued_jobs: running }, running.length > 0 ? 'stopping: requeueing running jobs' : 'stopping');
          shutdown.abort();
          background.abort();
          await releaseAll();
          if (config.hooks.stop) await runHook('stop', config.hooks.stop, logger);
          lifecycle.transition('STOPPED');
          self.logStatus('worker stopped');
          finish();
        })();
        return stopping;
      },
      logStatus(message) {
        const current = status();
        logger.info(
          {
            version: current.version,
            state: current.state,
            uptime_s: current.uptimeSeconds,
            pool_size: current.expectedPoolSize,
            processed: current.totalProcessed,
            processors: current.processors.map((p) => ({ id: p.id, state: p.status, job_id: p.currentJobId ?? null, processed: p.processed })),
          },
          message,
        );
      },
    };
    metrics.observe({
      state: () => lifecycle.state,
      poolSize: () => pool.size,
      processors: () => pool.counts(),
      brokerConnected: () => queue.notReadyReason() === undefined,
      breakerOpen: () => breaker.state !== 'closed',
    });

    const listeners: { control?: HttpListener; debug?: HttpListener } = {};
    if (config.control) {
      const control = await startControlServer({
        host: config.control.host,
        port: config.control.port,
        auth: config.remoteAuth,
        worker: self,
        metrics: metrics.handle,
        logger,
      });
      listeners.control = control;
      // Closed last: /healthz answers while the worker drains.
      releasers.splice(0, 0, { name: 'the control API', release: () => control.close() });
    }
    if (config.debug) {
      const debug = await startDebugServer({ ...config.debug, auth: config.remoteAuth, metrics: metrics.handle, logger });
      listeners.debug = debug;
      releasers.splice(0, 0, { name: 'the debug port', release: () => debug.close() });
    }
    Object.assign(self, { controlUrl: listeners.control?.url, debugUrl: listeners.debug?.url });

    if (config.hooks.start) await runHook('start', config.hooks.start, logger, background.signal);
    await pool.grow(config.poolSize);
    lifecycle.transition('RUNNING');
    logger.info(
      { version: VERSION, queue: `${queue.name}:${config.queueName}`, backend: definition.name, pool_size: config.poolSize },
      'worker started',
    );
    if (config.heartbeat) {
      void watchHeartbeat({
        ...config.heartbeat,
        logger,
        signal: background.signal,
        onDown: () => self.drain('heartbeat says down'),
      });
    }
    return self;
  } catch (err) {
    // Startup failed halfway: release what was made, newest first.
    shutdown.abort();
    background.abort();
    await releaseAll();
    throw err;
  }
}
