/**
 * The Worker: the lifecycle (src/lifecycle/state.ts says which moves are
 * allowed; this class says what each one does), the processor pool, the
 * drain timer, the pause reasons and the releasers. Signals, the control
 * API and the heartbeat act on it through its methods; tests await its
 * events.
 *
 * Three things hold the worker back from taking jobs, each on its own: the
 * operator (SIGUSR2, `PATCH /worker`; recorded as the PAUSED state), the
 * circuit breaker (the backend keeps failing to start instances) and a
 * broker connection that is down (a job taken then could neither report nor
 * log). Jobs are taken only when none holds, so a worker the operator paused
 * stays paused when the breaker closes; while the breaker is half-open one
 * processor takes a trial job.
 *
 * Over the usual size: each transition acts on the pool, the drain timer
 * and the holds at once; split apart, each part would reach into the
 * others' state.
 */
import { EventEmitter, setMaxListeners } from 'node:events';
import type { Tracer } from '@opentelemetry/api';
import type { CircuitBreaker } from './backend/breaker.js';
import type { Backend } from './backend/contract.js';
import type { WorkerConfig } from './config/types.js';
import type { HttpListener } from './control/http.js';
import type { WorkerControl } from './control/routes.js';
import { CancelRegistry } from './job/cancels.js';
import { createJobRunner, type JobDone } from './job/runner.js';
import type { LifetimeSubject } from './fleet/lifetime.js';
import { drainBudgetMs } from './lifecycle/drain-budget.js';
import { runHook } from './lifecycle/hooks.js';
import type { SignalControl } from './lifecycle/signals.js';
import { Lifecycle, type WorkerState } from './lifecycle/state.js';
import { buildStatus, statusLogFields, type WorkerStatus } from './lifecycle/status.js';
import type { Logger } from './logger.js';
import { ProcessorPool, type PoolHold } from './pool.js';
import type { ProcessorStatus } from './processor.js';
import type { CancelCommand, JobQueue } from './queue/contract.js';
import type { Reaper } from './reaper/reaper.js';
import type { Releasers } from './releasers.js';
import type { WorkerMetrics } from './telemetry/metrics.js';
import type { WarmPool } from './warm-pool/pool.js';
import { GENERATED, REVISION, VERSION } from './version.js';

export type { JobDone } from './job/runner.js';

/**
 * Who holds the worker back from taking jobs: the operator, the circuit
 * breaker, a broker that is away, or the cloud's rebalance recommendation
 * (the host is at risk of interruption: running jobs go on, new ones are
 * better started elsewhere).
 */
export type PauseReason = 'operator' | 'breaker' | 'broker' | 'rebalance';

/** Each hold as the operator's resume names it when it still holds jobs back. */
const HOLD_NAMES: Record<Exclude<PauseReason, 'operator'>, string> = {
  breaker: 'the circuit breaker',
  broker: 'a broker connection that is down',
  rebalance: "the cloud's rebalance recommendation",
};

/** What bounds a drain besides the shutdown timeout. */
export interface DrainOptions {
  /** When the host goes away (ms since the epoch), from a cloud's notice; jobs get until then less `TRAVIS_WORKER_HOST_NOTICE_MARGIN`. */
  deadline?: number;
}

export interface WorkerEvents {
  'job-done': [JobDone];
  /** A cancel command arrived: delivered to a running job or remembered for later. */
  cancel: [CancelCommand, 'delivered' | 'remembered'];
  /** The lifecycle moved (RUNNING -> PAUSED, ...). */
  state: [to: WorkerState, from: WorkerState];
  /** A processor changed state, or left the pool (`stopped`). */
  processor: [ProcessorStatus];
  /** After a drain, every running job has settled; `stopped` follows. */
  drained: [];
  /** Everything is released; the worker is STOPPED. */
  stopped: [];
}

/** What the worker is built from; `main.ts` makes these and hands them over. */
export interface WorkerParts {
  config: WorkerConfig;
  logger: Logger;
  queue: JobQueue;
  backend: Backend;
  metrics: WorkerMetrics;
  tracer: Tracer;
  /** The orphan reaper, when it runs (a backend that can list its instances, a non-zero interval). */
  reaper: Reaper | undefined;
  /** Holds jobs back while the backend keeps failing to start instances; shared with the warm pool, whose boots count too. */
  breaker: CircuitBreaker;
  /** The warm pool, when there is one (it is also `backend`): destroyed first when the worker drains or stops, shown in the status. */
  warmPool?: WarmPool | undefined;
  /** What was started for the worker so far; the worker adds its own and releases them all when it stops. */
  releasers: Releasers;
  /** Fetch each job's script before starting its instance instead of both at once (run-job.ts). */
  sequentialStart?: boolean;
}

export class Worker implements WorkerControl, SignalControl {
  readonly events = new EventEmitter<WorkerEvents>();
  readonly pool: ProcessorPool;
  readonly cancels = new CancelRegistry();
  /** Holds jobs back while the backend keeps failing to start instances. */
  readonly breaker: CircuitBreaker;
  /** Resolves when the worker has stopped, by `stop()` or `drain()`. Losing the broker does not stop it: the queue reconnects. */
  readonly stopped: Promise<void>;
  private readonly lifecycle = new Lifecycle();
  /** Aborts when running jobs must stop (and be requeued). */
  private readonly shutdown = new AbortController();
  /** Pauses that are not the operator's (whose pause is the PAUSED state). */
  private readonly holds = new Set<Exclude<PauseReason, 'operator'>>();
  private trialWanted = false;
  private drainTimer: NodeJS.Timeout | undefined;
  /** When the drain's budget ends (ms since the epoch), while draining. */
  private drainEndsAt: number | undefined;
  private stopping: Promise<void> | undefined;
  private readonly urls: { control?: string; debug?: string } = {};

  constructor(private readonly parts: WorkerParts) {
    const { config, logger, queue } = parts;
    this.stopped = new Promise((resolve) => this.events.once('stopped', resolve));
    // Every running job listens on it (one listener a job, up to POOL_SIZE, which may be hundreds).
    setMaxListeners(0, this.shutdown.signal);
    this.lifecycle.on('change', (to, from) => {
      logger.info({ state: to, from }, 'worker state');
      this.events.emit('state', to, from);
    });

    this.breaker = parts.breaker;
    this.breaker.on('open', () => {
      parts.metrics.breakerOpened();
      this.pause('breaker');
    });
    this.breaker.on('half-open', () => {
      this.trialWanted = this.holds.has('breaker');
      this.applyHolds();
    });
    this.breaker.on('close', () => this.resume('breaker'));

    queue.onCancel((command) => {
      const outcome = this.cancels.cancel(command);
      logger.info({ job_id: command.jobId, source: command.source, outcome }, 'cancel command');
      this.events.emit('cancel', command, outcome);
    });
    queue.onReadinessChange((reason) => {
      if (reason === undefined) {
        this.resume('broker');
        logger.info('the broker is back: taking jobs');
      } else {
        this.pause('broker');
        parts.metrics.brokerLost();
        logger.warn({ reason }, 'not taking jobs until the broker is back');
      }
    });

    const run = createJobRunner({
      ...parts,
      queueType: queue.name,
      breaker: this.breaker,
      cancels: this.cancels,
      shutdown: this.shutdown.signal,
      onDone: (done) => this.events.emit('job-done', done),
    });
    this.pool = new ProcessorPool(queue, run, logger, config.hostname, config.lifetime.maxJobs);
    this.pool.on('change', (processor) => this.events.emit('processor', processor));
    // Released first on stop: stop taking jobs and let every job settle before anything else closes.
    this.parts.releasers.add('the pool', () => this.pool.stop());
  }

  /** The orphan reaper, when it runs. */
  get reaper(): Reaper | undefined {
    return this.parts.reaper;
  }

  /** The warm pool, when there is one (`TRAVIS_WORKER_WARM_POOL_SIZE` > 0). */
  get warmPool(): WarmPool | undefined {
    return this.parts.warmPool;
  }

  get state(): WorkerState {
    return this.lifecycle.state;
  }

  /** Who holds the worker back from taking jobs now; empty when it takes them. */
  get pausedBy(): PauseReason[] {
    return [...(this.state === 'PAUSED' ? (['operator'] as const) : []), ...this.holds];
  }

  /** The control API's base URL (`http://127.0.0.1:8080`), when it is served. */
  get controlUrl(): string | undefined {
    return this.urls.control;
  }

  /** The debug port's base URL, when it is served. */
  get debugUrl(): string | undefined {
    return this.urls.debug;
  }

  /** Adopt a listener: its URL is published, and it closes after everything else (/healthz answers while the worker drains). */
  serve(kind: 'control' | 'debug', listener: HttpListener): void {
    this.urls[kind] = listener.url;
    this.parts.releasers.addFinal(kind === 'control' ? 'the control API' : 'the debug port', () => listener.close());
  }

  /** Open the processors' job sources and start taking jobs. */
  async start(): Promise<void> {
    await this.pool.grow(this.parts.config.poolSize);
    this.lifecycle.transition('RUNNING');
    this.parts.logger.info(
      { version: VERSION, queue: `${this.parts.queue.name}:${this.parts.config.queueName}`, backend: this.parts.config.providerName, pool_size: this.parts.config.poolSize },
      'worker started',
    );
  }

  status(): WorkerStatus {
    return buildStatus({
      version: VERSION,
      revision: REVISION,
      generated: GENERATED,
      startedAt: this.lifecycle.startedAt,
      state: this.state,
      expectedPoolSize: this.pool.size,
      totalProcessed: this.pool.processed,
      processors: this.pool.status(),
      warmPool: this.parts.warmPool?.status(),
    });
  }

  ready(): boolean {
    return this.state === 'RUNNING' && this.parts.queue.notReadyReason() === undefined && this.pool.size > 0 && this.breaker.state === 'closed';
  }

  notReadyReason(): string | undefined {
    return this.parts.queue.notReadyReason() ?? this.breaker.reason();
  }

  brokerNodes(): Readonly<Record<string, string>> {
    return this.parts.queue.brokerNodes?.() ?? {};
  }

  /** Stop taking jobs (running ones go on) until `resume(reason)`. The operator's pause is the PAUSED state. */
  pause(reason: PauseReason = 'operator'): void {
    if (reason === 'operator') {
      if (this.state === 'PAUSED') return;
      this.lifecycle.transition('PAUSED');
      this.parts.logger.info('paused: not taking jobs');
    } else {
      this.holds.add(reason);
      if (reason === 'breaker') this.trialWanted = false;
    }
    this.applyHolds();
  }

  /** Lift `reason`'s pause; jobs are taken again once nothing else holds the worker. */
  resume(reason: PauseReason = 'operator'): void {
    if (reason === 'operator') {
      if (this.state === 'RUNNING') return;
      this.lifecycle.transition('RUNNING');
    } else {
      this.holds.delete(reason);
      if (reason === 'breaker') this.trialWanted = false;
    }
    this.applyHolds();
    if (reason === 'operator') {
      const still = [...this.holds].map((held) => HOLD_NAMES[held]);
      this.parts.logger.info(still.length > 0 ? `resumed by the operator; ${still.join(' and ')} still holds jobs back` : 'resumed: taking jobs');
    }
  }

  togglePause(): void {
    if (this.state === 'PAUSED') this.resume();
    else this.pause();
  }

  async resize(size: number): Promise<void> {
    this.lifecycle.assertActive('resize the pool');
    await this.pool.resize(size);
  }

  async increment(): Promise<void> {
    this.lifecycle.assertActive('grow the pool');
    await this.pool.grow(1);
  }

  decrement(): void {
    this.lifecycle.assertActive('shrink the pool');
    if (this.pool.shrink(1) === 0) this.parts.logger.info('the pool is already empty');
  }

  /**
   * Stop taking jobs; running ones get `TRAVIS_WORKER_SHUTDOWN_TIMEOUT` to
   * finish, or less when `options.deadline` (a cloud's notice) comes sooner
   * (src/lifecycle/drain-budget.ts); then what still runs is requeued, its
   * instance destroyed, and the worker stops. Calling it again only brings
   * the end of the drain forward, when a nearer deadline arrives; `stop`
   * skips the rest of the wait.
   */
  drain(reason = 'drain', options: DrainOptions = {}): void {
    const { shutdownMs } = this.parts.config.timeouts;
    const now = Date.now();
    const deadline = options.deadline === undefined ? undefined : { at: options.deadline, marginMs: this.parts.config.host.noticeMarginMs };
    const budgetMs = drainBudgetMs(shutdownMs, deadline, now);
    const fields = { reason, running_jobs: this.runningJobs(), budget_ms: budgetMs, ...(deadline ? { deadline: new Date(deadline.at).toISOString() } : {}) };
    if (this.state === 'DRAINING' && this.drainEndsAt !== undefined && now + budgetMs < this.drainEndsAt) {
      this.parts.logger.warn(fields, 'draining already: a nearer deadline shortens the time running jobs have');
      this.endDrainIn(budgetMs);
      return;
    }
    if (!this.lifecycle.active) {
      this.parts.logger.info({ state: this.state, reason }, 'already stopping');
      return;
    }
    this.lifecycle.transition('DRAINING');
    this.parts.logger.info(fields, 'draining: taking no more jobs; running jobs may finish within the budget, then are requeued');
    this.pool.stopTaking();
    // No job will take a warm instance now: give them back at once, not after the running jobs.
    void this.parts.warmPool?.drain();
    this.endDrainIn(budgetMs);
    void this.pool.settled().then(() => {
      if (this.stopping) return;
      this.events.emit('drained');
      return this.stop('drained');
    });
  }

  /** Stop taking jobs, requeue the running ones, release everything. Idempotent. */
  stop(reason = 'stop'): Promise<void> {
    this.stopping ??= (async () => {
      clearTimeout(this.drainTimer);
      if (this.state !== 'STOPPING') this.lifecycle.transition('STOPPING');
      const running = this.runningJobs();
      this.parts.logger.info({ reason, requeued_jobs: running }, running.length > 0 ? 'stopping: requeueing running jobs' : 'stopping');
      this.shutdown.abort();
      void this.parts.warmPool?.drain();
      await this.parts.releasers.releaseAll();
      if (this.parts.config.hooks.stop) await runHook('stop', this.parts.config.hooks.stop, this.parts.logger);
      this.lifecycle.transition('STOPPED');
      this.logStatus('worker stopped');
      this.events.emit('stopped');
    })();
    return this.stopping;
  }

  /** What the host lifetime policy (src/fleet/lifetime.ts) watches and drains. */
  lifetimeSubject(): LifetimeSubject {
    return {
      drain: (reason) => this.drain(reason),
      acceptsDrain: () => this.lifecycle.active,
      runningJobs: () => this.pool.counts().busy,
      onProcessorChange: (listener) => {
        this.events.on('processor', listener);
        return () => this.events.off('processor', listener);
      },
      budget: this.pool.budget,
    };
  }

  logStatus(message: string): void {
    this.parts.logger.info(statusLogFields(this.status()), message);
  }

  /** Requeue what still runs once `budgetMs` has passed (at once when it is 0). */
  private endDrainIn(budgetMs: number): void {
    clearTimeout(this.drainTimer);
    this.drainEndsAt = Date.now() + budgetMs;
    this.drainTimer = setTimeout(() => {
      this.parts.logger.warn({ budget_ms: budgetMs }, 'the drain budget is spent: requeueing the jobs still running');
      void this.stop('drain budget spent');
    }, budgetMs);
  }

  private runningJobs(): number[] {
    return this.pool.status().flatMap((p) => (p.jobId === undefined ? [] : [p.jobId]));
  }

  /** Tell the pool which processors take jobs, from what holds the worker now. */
  private applyHolds(): void {
    let hold: PoolHold = 'none';
    // The operator's pause and every hold but the breaker's (the broker, a rebalance recommendation) hold every processor;
    // the breaker alone may let one half-open trial through.
    if (this.state === 'PAUSED' || [...this.holds].some((held) => held !== 'breaker')) hold = 'all';
    else if (this.holds.has('breaker')) hold = this.trialWanted ? 'trial' : 'all';
    this.pool.hold(hold);
  }
}
