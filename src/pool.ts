/**
 * The processor pool: `TRAVIS_WORKER_POOL_SIZE` processors
 * (src/processor.ts), grown, shrunk and held together.
 *
 * The worker (src/worker.ts) decides whether the pool takes jobs, from
 * its pause reasons; the pool applies it (`hold`): every processor takes
 * jobs, none does, or, while the circuit breaker is half-open, one
 * processor (the trial) does and the others stay paused.
 */
import { EventEmitter } from 'node:events';
import { JobBudget } from './job-budget.js';
import { LifecycleError } from './lifecycle/state.js';
import type { Logger } from './logger.js';
import type { JobQueue } from './queue/contract.js';
import { Processor, type ProcessorStatus, type RunJob } from './processor.js';

/**
 * The most processors a pool may have, however it is sized (POOL_SIZE,
 * `PATCH /worker`, `POST /pool/increment`, SIGTTIN). Each processor holds a
 * channel of its own on the jobs connection (and its job's log parts one on
 * the logs connection), beside the few the worker shares; RabbitMQ refuses
 * channels past its `channel_max`, 2047 per connection by default. 1000
 * leaves room for those and is far beyond what one host runs.
 */
export const MAX_POOL_SIZE = 1000;

/** A resize that would take the pool past MAX_POOL_SIZE; refused as a lifecycle refusal is (409, signal ignored). */
export class PoolLimitError extends LifecycleError {
  override readonly code = 'E_POOL_LIMIT';
}

/** Which processors take jobs: all (`none` held), none (`all`), or only one trial processor (`trial`). */
export type PoolHold = 'none' | 'all' | 'trial';

/** Counts of processors by what they are doing, for metrics. */
export interface PoolCounts {
  busy: number;
  idle: number;
  paused: number;
}

export interface PoolEvents {
  /** A processor changed state (or left the pool: `stopped`). */
  change: [ProcessorStatus];
}

export class ProcessorPool extends EventEmitter<PoolEvents> {
  private readonly processors: Processor[] = [];
  private nextId = 1;
  private held: PoolHold = 'none';
  /** The one processor taking jobs while the hold is `trial`. */
  private trial: Processor | undefined;
  private closed = false;
  /** Settled jobs of processors that have left the pool. */
  private processedByGone = 0;
  /** The jobs the pool may still take (`TRAVIS_WORKER_MAX_JOBS`); its `spent` event says the last one was taken. */
  readonly budget: JobBudget;

  /** `maxJobs`: jobs the pool takes in all, then no more; 0 = no limit. */
  constructor(
    private readonly queue: JobQueue,
    private readonly runJob: RunJob,
    private readonly logger: Logger,
    private readonly hostname: string,
    maxJobs = 0,
  ) {
    super();
    this.budget = new JobBudget(maxJobs > 0 ? maxJobs : Infinity);
  }

  /** Add `count` processors, each with its own source; resolves once their sources are open. */
  async grow(count: number): Promise<void> {
    if (this.closed) throw new Error('the pool is stopping: it cannot grow');
    if (this.size + count > MAX_POOL_SIZE) {
      throw new PoolLimitError(`the pool cannot grow to ${this.size + count} processors: ${MAX_POOL_SIZE} at most`);
    }
    const added: Processor[] = [];
    for (let i = 0; i < count; i++) {
      const id = `${this.hostname}:${this.nextId++}`;
      const processor = new Processor(
        id,
        this.queue,
        this.runJob,
        this.logger,
        this.held !== 'none',
        (p) => this.forget(p),
        (p) => this.emit('change', p.status()),
        this.budget,
      );
      this.processors.push(processor);
      added.push(processor);
    }
    this.apply();
    // A processor whose source fails to open tries again later; wait until each has tried once.
    await Promise.all(added.map((p) => p.started));
    this.logger.info({ pool_size: this.size }, 'processors started');
  }

  /**
   * Remove `count` processors: idle or paused ones first, then the newest
   * busy ones, which finish their job and stop. Resolves at once; the
   * removed processors' `done` is awaited by `stop`.
   */
  shrink(count: number): number {
    const candidates = this.active()
      .slice()
      .reverse()
      .sort((a, b) => rank(a) - rank(b));
    const removed = candidates.slice(0, Math.max(0, count));
    for (const processor of removed) processor.retire();
    if (removed.includes(this.trial as Processor)) this.apply();
    if (removed.length > 0) this.logger.info({ pool_size: this.size, removed: removed.map((p) => p.id) }, 'processors removed');
    return removed.length;
  }

  /** Grow or shrink to `size` processors (not counting the ones finishing their last job). */
  async resize(size: number): Promise<void> {
    const difference = size - this.size;
    if (difference > 0) await this.grow(difference);
    else if (difference < 0) this.shrink(-difference);
  }

  /** Processors in the pool (not counting removed ones finishing their last job). */
  get size(): number {
    return this.active().length;
  }

  /** Jobs settled by every processor this pool has had. */
  get processed(): number {
    return this.processedByGone + this.processors.reduce((sum, p) => sum + p.processed, 0);
  }

  status(): ProcessorStatus[] {
    return this.processors.map((p) => p.status());
  }

  counts(): PoolCounts {
    const counts: PoolCounts = { busy: 0, idle: 0, paused: 0 };
    for (const processor of this.processors) {
      if (processor.state === 'processing' || processor.state === 'stopping') counts.busy++;
      else if (processor.state === 'paused') counts.paused++;
      else if (processor.state === 'waiting' || processor.state === 'starting') counts.idle++;
    }
    return counts;
  }

  /**
   * Which processors take jobs from now on. A held processor closes its
   * source; its running job goes on. A released one takes jobs again, each
   * on a fresh source.
   */
  hold(held: PoolHold): void {
    this.held = held;
    this.apply();
  }

  /** Pause or resume each processor to match the hold. */
  private apply(): void {
    if (this.held !== 'trial') {
      this.trial = undefined;
    } else if (this.trial === undefined || this.trial.isRetired || this.trial.state === 'stopped') {
      const active = this.active();
      // An idle processor takes the trial job at once; a busy one only after its job.
      this.trial = active.find((p) => p.state !== 'processing') ?? active[0];
    }
    for (const processor of this.processors) {
      if (this.held === 'all' || (this.held === 'trial' && processor !== this.trial)) processor.pause();
      else processor.resume();
    }
  }

  /** Stop taking jobs for good; running jobs go on. Resolves at once. */
  stopTaking(): void {
    this.closed = true;
    for (const processor of this.processors) processor.retire();
  }

  /** Stop taking jobs and wait for every processor's job in hand to settle. */
  async stop(): Promise<void> {
    this.stopTaking();
    await Promise.all(this.processors.map((p) => p.done));
  }

  /** Resolves when every processor has stopped (after `stopTaking`). */
  async settled(): Promise<void> {
    await Promise.all(this.processors.map((p) => p.done));
  }

  private active(): Processor[] {
    return this.processors.filter((p) => !p.isRetired && p.state !== 'stopped');
  }

  private forget(processor: Processor): void {
    // Removed processors leave the list, their count stays in `processed`;
    // processors stopped by the pool's own stop stay for the final status.
    if (this.closed) return;
    const index = this.processors.indexOf(processor);
    if (index >= 0) this.processors.splice(index, 1);
    this.processedByGone += processor.processed;
    if (processor === this.trial) this.apply();
    this.emit('change', processor.status());
  }
}

/** Which processors a decrement takes first: idle, then paused, then busy ones. */
function rank(processor: Processor): number {
  switch (processor.state) {
    case 'waiting':
    case 'starting':
      return 0;
    case 'paused':
      return 1;
    default:
      return 2;
  }
}
