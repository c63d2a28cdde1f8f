/**
 * The worker's metrics, served as Prometheus text at `/metrics` on the
 * control and debug listeners. Recorded through OpenTelemetry's metrics SDK
 * and read by its Prometheus exporter (no server of its own: our listeners
 * call its request handler); with `OTEL_EXPORTER_OTLP_ENDPOINT` set they are
 * also pushed over OTLP, so a collector can ship them (the demand gauges
 * above all) to CloudWatch or Cloud Monitoring. With neither, nothing would
 * ever read them, so `noopMetrics` is used and recording costs nothing.
 *
 * Names follow Prometheus conventions: `mayfly_` prefix, `_seconds` and
 * `_bytes` units, counters end in `_total` (the exporter adds it).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Attributes, Meter } from '@opentelemetry/api';
import { PrometheusExporter } from '@opentelemetry/exporter-prometheus';
import { OTLPMetricExporter } from '@opentelemetry/exporter-metrics-otlp-proto';
import { MeterProvider, PeriodicExportingMetricReader, type IMetricReader } from '@opentelemetry/sdk-metrics';
import type { ApiCallOutcome, BackendMetrics, BootPhase } from '../backend/contract.js';
import type { HostNoticeKind } from '../fleet/notices.js';
import type { JobResult } from '../job/outcome.js';
import type { WorkerState } from '../lifecycle/state.js';
import type { PoolCounts } from '../pool.js';
import type { EvictReason } from '../warm-pool/types.js';

/** How a job ended, as counted: a terminal state, `reset` (requeued) or `abandoned` (left to the broker). */
type JobEndLabel = 'passed' | 'failed' | 'errored' | 'cancelled' | 'reset' | 'abandoned';

function endLabelOf(result: JobResult): JobEndLabel {
  if (result.outcome === 'finished') return result.state;
  return result.outcome === 'requeued' ? 'reset' : 'abandoned';
}

/** What the job pipeline records (durations in milliseconds). */
export interface JobMetrics {
  /** A job run ended (its delivery settled); a requeue is counted by its cause too. */
  jobEnded(result: JobResult): void;
  /** From the job's `queued_at` to the worker taking it. */
  queueWait(ms: number): void;
  /** From taking the job to `received` published. */
  timeToReceived(ms: number): void;
  /** From taking the job to `started` published (script, boot, upload). */
  timeToStarted(ms: number): void;
  bootPhase(phase: BootPhase, ms: number): void;
  /** From the script's start to its exit. */
  scriptRun(ms: number): void;
  /** One log part published, `bytes` of UTF-8 content. */
  logPart(bytes: number): void;
}

/** What the worker's gauges read when scraped. */
export interface WorkerGauges {
  state(): WorkerState;
  poolSize(): number;
  processors(): PoolCounts;
  /** 1 while the broker connection is up (always 1 for the file queue). */
  brokerConnected(): boolean;
  /** The broker node each connection uses now, by role, URIs with passwords masked. */
  brokerNodes(): Readonly<Record<string, string>>;
  /** True while the circuit breaker holds jobs back (open or half-open). */
  breakerOpen(): boolean;
  /** Jobs ready in the queue (JobQueue.readyJobs); rejects when that can't be known now. */
  readyJobs(): Promise<number>;
  /** The warm pool's idle and booting instances per shape, when there is a pool. */
  warmPool?(): ReadonlyMap<string, { idle: number; booting: number }>;
}

/** What the warm pool records (src/warm-pool/); `shape` is a `MachineShape.key`. */
export interface WarmPoolMetrics {
  /** A job got a warm instance. */
  hit(shape: string): void;
  /** A job found no warm instance of its shape and got a cold start. */
  miss(shape: string): void;
  /** An idle instance left the pool, `used` by a job or evicted (why), after sitting idle `idleMs`. */
  left(how: 'used' | EvictReason, idleMs: number): void;
  /** A pool boot failed: the start itself, or the readiness probe after it. */
  bootFailed(stage: 'start' | 'probe'): void;
}

/** Why the reaper destroyed an instance: its lease expired, or this worker made it and no job here holds it. */
export type ReapReason = 'lease-expired' | 'orphaned';

export interface WorkerMetrics extends JobMetrics {
  /** The metrics hook a backend reports its API calls to. */
  readonly backend: BackendMetrics;
  /** Start reporting the gauges (once the worker parts exist). */
  observe(gauges: WorkerGauges): void;
  /** The circuit breaker opened (or reopened after a failed trial). */
  breakerOpened(): void;
  /** A broker connection was lost: the worker stopped taking jobs until it is back. */
  brokerLost(): void;
  /** The reaper destroyed an instance. */
  reaped(reason: ReapReason): void;
  /** The reaper could not list or destroy (`operation`) instances. */
  reaperFailed(operation: 'list' | 'destroy'): void;
  /** The cloud gave this host a notice (spot interruption, scale-in, rebalance, preemption, maintenance). */
  hostNotice(kind: HostNoticeKind): void;
  readonly warmPool: WarmPoolMetrics;
  /** Answer a scrape with the Prometheus text; undefined when metrics are off. */
  readonly handle: ((request: IncomingMessage, response: ServerResponse) => void) | undefined;
  shutdown(): Promise<void>;
}

/** Seconds: boot phases and script runs span from milliseconds to the 50-minute hard limit. */
const DURATION_BUCKETS_S = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3000];
/** Seconds: cloud API calls are mostly sub-second, retries and waits can take a minute. */
const API_BUCKETS_S = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

const WORKER_STATES: readonly WorkerState[] = ['STARTING', 'RUNNING', 'PAUSED', 'DRAINING', 'STOPPING', 'STOPPED'];

/** Metrics that go nowhere: when no listener would serve them. */
export const noopMetrics: WorkerMetrics = {
  jobEnded() {},
  queueWait() {},
  timeToReceived() {},
  timeToStarted() {},
  bootPhase() {},
  scriptRun() {},
  logPart() {},
  backend: { apiCall() {} },
  observe() {},
  breakerOpened() {},
  brokerLost() {},
  reaped() {},
  reaperFailed() {},
  hostNotice() {},
  warmPool: { hit() {}, miss() {}, left() {}, bootFailed() {} },
  handle: undefined,
  async shutdown() {},
};

/**
 * Metrics recorded with the OpenTelemetry SDK and served in Prometheus
 * format; `backend` labels every series. With `otlp`, they are also pushed
 * over OTLP (protobuf), the exporter reading the standard `OTEL_EXPORTER_OTLP_*`
 * variables (endpoint, headers) itself, every `OTEL_METRIC_EXPORT_INTERVAL`
 * (60 s by default) and once more on shutdown.
 */
export function createPrometheusMetrics(labels: { backend: string; queue: string }, options: { otlp?: boolean } = {}): WorkerMetrics {
  const exporter = new PrometheusExporter({ preventServerStart: true, withoutScopeInfo: true });
  const readers: IMetricReader[] = [exporter];
  if (options.otlp === true) readers.push(new PeriodicExportingMetricReader({ exporter: new OTLPMetricExporter() }));
  const provider = new MeterProvider({ readers });
  const meter: Meter = provider.getMeter('mayfly');
  const base: Attributes = { backend: labels.backend };
  const seconds = (name: string, description: string, buckets = DURATION_BUCKETS_S) =>
    meter.createHistogram(name, { description, unit: 's', advice: { explicitBucketBoundaries: buckets } });

  const jobs = meter.createCounter('mayfly_jobs', { description: 'Jobs that ended, by how: terminal state, reset (requeued) or abandoned' });
  const requeues = meter.createCounter('mayfly_job_requeues', { description: 'Jobs requeued (reset), by reason (an error code or shutdown)' });
  const queueWait = seconds('mayfly_job_queue_wait_seconds', "From the job's queued_at to the worker taking it");
  const toReceived = seconds('mayfly_job_time_to_received_seconds', 'From taking the job to its received state being published');
  const toStarted = seconds('mayfly_job_time_to_started_seconds', 'From taking the job to its started state being published (script, boot, upload)');
  const boot = seconds('mayfly_boot_phase_seconds', 'Duration of each phase of bringing an instance up');
  const script = seconds('mayfly_script_run_seconds', "From the script's start to its exit");
  const logBytes = meter.createCounter('mayfly_log_bytes', { description: 'Bytes of job log published', unit: 'By' });
  const logParts = meter.createCounter('mayfly_log_parts', { description: 'Job log parts published' });
  const apiCalls = meter.createCounter('mayfly_cloud_api_calls', { description: 'Calls to the backend API, by operation and outcome' });
  const apiThrottles = meter.createCounter('mayfly_cloud_api_throttles', { description: 'Calls to the backend API refused for rate or quota, by operation' });
  const apiDuration = seconds('mayfly_cloud_api_call_seconds', 'Duration of calls to the backend API', API_BUCKETS_S);
  const breakerOpenings = meter.createCounter('mayfly_breaker_openings', {
    description: 'Times the circuit breaker stopped the worker taking jobs after failed instance starts',
  });
  const brokerOutages = meter.createCounter('mayfly_broker_outages', {
    description: 'Times a broker connection was lost and the worker stopped taking jobs until it reconnected',
  });
  const reaped = meter.createCounter('mayfly_reaped_instances', { description: 'Orphaned instances the reaper destroyed, by reason' });
  const reaperFailures = meter.createCounter('mayfly_reaper_failures', { description: 'Reaper calls that failed, by operation (list, destroy)' });
  const hostNotices = meter.createCounter('mayfly_host_notices', {
    description: "Notices the cloud gave this host, by kind (spot-interruption, scale-in, rebalance, preemption, maintenance)",
  });
  const warmHits = meter.createCounter('mayfly_warm_pool_hits', { description: 'Jobs that got a warm instance, by shape' });
  const warmMisses = meter.createCounter('mayfly_warm_pool_misses', { description: 'Jobs that found no warm instance of their shape (a cold start), by shape' });
  const warmIdle = seconds('mayfly_warm_pool_idle_seconds', 'How long warm instances sat idle, by how they left the pool (used, or evicted: age, image, surplus, capacity, drain, dead)');
  const warmBootFailures = meter.createCounter('mayfly_warm_pool_boot_failures', { description: 'Warm pool boots that failed, by stage (start, probe)' });

  return {
    jobEnded(result) {
      jobs.add(1, { ...base, state: endLabelOf(result) });
      if (result.outcome === 'requeued') requeues.add(1, { ...base, reason: result.cause });
    },
    queueWait: (ms) => queueWait.record(Math.max(0, ms) / 1000, base),
    timeToReceived: (ms) => toReceived.record(ms / 1000, base),
    timeToStarted: (ms) => toStarted.record(ms / 1000, base),
    bootPhase: (phase, ms) => boot.record(ms / 1000, { ...base, phase }),
    scriptRun: (ms) => script.record(ms / 1000, base),
    logPart(bytes) {
      logParts.add(1, base);
      logBytes.add(bytes, base);
    },
    backend: {
      apiCall(operation: string, outcome: ApiCallOutcome, durationMs: number) {
        apiCalls.add(1, { ...base, operation, outcome });
        apiDuration.record(durationMs / 1000, { ...base, operation });
        if (outcome === 'throttled') apiThrottles.add(1, { ...base, operation });
      },
    },
    breakerOpened: () => breakerOpenings.add(1, base),
    brokerLost: () => brokerOutages.add(1, { queue: labels.queue }),
    reaped: (reason) => reaped.add(1, { ...base, reason }),
    reaperFailed: (operation) => reaperFailures.add(1, { ...base, operation }),
    hostNotice: (kind) => hostNotices.add(1, { ...base, kind }),
    warmPool: {
      hit: (shape) => warmHits.add(1, { ...base, shape }),
      miss: (shape) => warmMisses.add(1, { ...base, shape }),
      left: (how, idleMs) => warmIdle.record(idleMs / 1000, { ...base, how }),
      bootFailed: (stage) => warmBootFailures.add(1, { ...base, stage }),
    },
    observe(gauges) {
      const { warmPool } = gauges;
      if (warmPool !== undefined) {
        // As with broker nodes: a shape seen once is reported as 0 when it has no instances left.
        const shapesSeen = new Set<string>();
        meter
          .createObservableGauge('mayfly_warm_pool_instances', { description: 'Warm pool instances by shape and state (idle: ready for a job; booting)' })
          .addCallback((result) => {
            const counts = warmPool();
            for (const shape of counts.keys()) shapesSeen.add(shape);
            for (const shape of shapesSeen) {
              const count = counts.get(shape);
              result.observe(count?.idle ?? 0, { ...base, shape, state: 'idle' });
              result.observe(count?.booting ?? 0, { ...base, shape, state: 'booting' });
            }
          });
      }
      meter
        .createObservableGauge('mayfly_breaker_open', { description: '1 while the circuit breaker holds jobs back (open or half-open)' })
        .addCallback((result) => result.observe(gauges.breakerOpen() ? 1 : 0, base));
      meter
        .createObservableGauge('mayfly_processors', { description: 'Processors by what they do: busy (running a job), idle, paused' })
        .addCallback((result) => {
          const counts = gauges.processors();
          for (const [state, value] of Object.entries(counts)) result.observe(value, { state });
        });
      // With mayfly_processors{state="busy"} and mayfly_pool_size, the demand an autoscaler reads, in job slots (docs/fleet.md).
      meter
        .createObservableGauge('mayfly_queue_ready_jobs', { description: 'Jobs waiting in the queue, ready to be taken by any worker' })
        .addCallback(async (result) => {
          // A count that can't be read now (broker away) is left out of this scrape rather than reported as 0, which would read as "no demand".
          const ready = await gauges.readyJobs().catch(() => undefined);
          if (ready !== undefined) result.observe(ready, { queue: labels.queue });
        });
      meter
        .createObservableGauge('mayfly_pool_size', { description: 'Processors in the pool (TRAVIS_WORKER_POOL_SIZE, as resized)' })
        .addCallback((result) => result.observe(gauges.poolSize()));
      meter
        .createObservableGauge('mayfly_broker_connected', { description: '1 while every broker connection (jobs, and logs if separate) is up' })
        .addCallback((result) => result.observe(gauges.brokerConnected() ? 1 : 0, { queue: labels.queue }));
      // The exporter keeps reporting a label set once observed, so a node used before is set to 0, not left out.
      const nodesSeen = new Map<string, { role: string; node: string }>();
      meter
        .createObservableGauge('mayfly_broker_node', {
          description: '1 for the broker node each connection (role jobs or logs) uses now, 0 for one it used before; the node label is its URI, password masked',
        })
        .addCallback((result) => {
          const inUse = new Set<string>();
          for (const [role, node] of Object.entries(gauges.brokerNodes())) {
            const key = `${role} ${node}`;
            inUse.add(key);
            nodesSeen.set(key, { role, node });
          }
          for (const [key, { role, node }] of nodesSeen) result.observe(inUse.has(key) ? 1 : 0, { queue: labels.queue, role, node });
        });
      meter
        .createObservableGauge('mayfly_worker_state', { description: '1 for the state the worker is in, 0 for the others' })
        .addCallback((result) => {
          const current = gauges.state();
          for (const state of WORKER_STATES) result.observe(state === current ? 1 : 0, { state });
        });
    },
    handle: (request, response) => exporter.getMetricsRequestHandler(request, response),
    shutdown: () => provider.shutdown(),
  };
}
