/**
 * One processor of the pool: takes one job at a time from its own job
 * source (its own AMQP channel with prefetch 1, as travis does) and runs it
 * to the end.
 *
 * A processor that must stop taking jobs (pause, drain, pool decrement)
 * closes its source at once rather than just not calling `next()`: with
 * prefetch 1 the broker may already have pushed it a delivery, and closing
 * the source hands that delivery back to the queue (nack, requeue) instead
 * of leaving it unacknowledged on a worker that will not run it. The job in
 * hand, if any, runs on; its channel stays open until it is settled. On
 * resume the processor opens a fresh source.
 *
 * A source that fails is closed, and a fresh one opened after a pause that
 * doubles up to 30 s: the processor stays in the pool.
 *
 * A source is open only on a permit of the pool's job budget
 * (src/job-budget.ts, `TRAVIS_WORKER_MAX_JOBS`); a processor that gets none
 * leaves the pool.
 */
import { errorMessage } from './errors.js';
import { abortableSleep } from './util/abort.js';
import { growingDelays } from './util/backoff.js';
import type { JobBudget } from './job-budget.js';
import type { Logger } from './logger.js';
import type { JobQueue, JobSource, QueuedJob } from './queue/contract.js';
import type { JobResult } from './job/outcome.js';

/**
 * - `starting`: opening its job source
 * - `waiting`: idle, ready for a job
 * - `processing`: running a job
 * - `paused`: not taking jobs until resumed (its source is closed)
 * - `stopping`: removed from the pool (decrement, drain): finishing its job, then gone
 * - `stopped`: done
 */
export type ProcessorState = 'starting' | 'waiting' | 'processing' | 'paused' | 'stopping' | 'stopped';

export interface ProcessorStatus {
  id: string;
  state: ProcessorState;
  /** The job being processed, if any. */
  jobId?: number;
  /** The last job this processor took, if any (travis' `lastJobId`). */
  lastJobId?: number;
  /** Jobs this processor has settled. */
  processed: number;
}

/** The first pause before a processor opens a fresh source after its source failed; it doubles on each failure in a row. */
const SOURCE_RETRY_FIRST_MS = 1_000;
/** The longest such pause: an operator's fix (the queue declared again, access granted) is picked up within it. */
const SOURCE_RETRY_CEILING_MS = 30_000;

export type RunJob = (job: QueuedJob, processorId: string) => Promise<JobResult>;

/** Resolves once; `wait` gives the same promise to every caller. */
class Gate {
  private opened = false;
  private resolvers: Array<() => void> = [];

  open(): void {
    this.opened = true;
    for (const resolve of this.resolvers.splice(0)) resolve();
  }

  wait(): Promise<void> {
    return this.opened ? Promise.resolve() : new Promise((resolve) => this.resolvers.push(resolve));
  }
}

export class Processor {
  private current: ProcessorState = 'starting';
  jobId: number | undefined;
  lastJobId: number | undefined;
  processed = 0;
  private source: JobSource | undefined;
  private closingSource: Promise<void> | undefined;
  /** Aborts the current `next()` when the processor must stop taking jobs. */
  private take = new AbortController();
  private paused: boolean;
  private retired = false;
  /** Holds one of the budget's permits: true while its source is open (or opening) and no job was taken on it. */
  private permit = false;
  /** Opened to end a pause (or to let a retired paused processor finish). */
  private unpause = new Gate();
  /** Opened once the processor is past its first source opening (or paused, or stopped). */
  private readonly settledIn = new Gate();
  readonly done: Promise<void>;

  constructor(
    readonly id: string,
    private readonly queue: JobQueue,
    private readonly runJob: RunJob,
    private readonly logger: Logger,
    paused: boolean,
    private readonly onStopped: (processor: Processor) => void,
    private readonly onChange: (processor: Processor) => void,
    private readonly budget: JobBudget,
  ) {
    this.paused = paused;
    this.done = this.loop();
  }

  get state(): ProcessorState {
    return this.current;
  }

  set state(state: ProcessorState) {
    if (state === this.current) return;
    this.current = state;
    this.onChange(this);
  }

  /** Stop taking jobs until `resume`; the job in hand runs on. */
  pause(): void {
    if (this.retired || this.paused) return;
    this.paused = true;
    this.unpause = new Gate();
    this.stopTaking();
  }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    this.unpause.open();
  }

  /** Leave the pool: finish the job in hand, take no other. */
  retire(): void {
    if (this.retired) return;
    this.retired = true;
    if (this.state !== 'stopped') this.state = this.state === 'processing' ? 'stopping' : this.state;
    this.stopTaking();
    this.unpause.open();
  }

  /** Resolves once the processor has opened its first source (or failed to), is paused, or has stopped. */
  get started(): Promise<void> {
    return this.settledIn.wait();
  }

  get isRetired(): boolean {
    return this.retired;
  }

  status(): ProcessorStatus {
    return {
      id: this.id,
      state: this.state,
      processed: this.processed,
      ...(this.jobId === undefined ? {} : { jobId: this.jobId }),
      ...(this.lastJobId === undefined ? {} : { lastJobId: this.lastJobId }),
    };
  }

  private stopTaking(): void {
    this.take.abort();
    // Closing now (not after the job in hand) cancels the consumer at once,
    // so nothing more is prefetched for a processor that won't run it.
    this.closeSource();
  }

  private closeSource(): Promise<void> {
    if (this.permit) {
      this.permit = false;
      this.budget.release();
    }
    const source = this.source;
    if (!source) return this.closingSource ?? Promise.resolve();
    this.source = undefined;
    this.closingSource = source.close().catch((err: unknown) => {
      this.logger.warn({ processor: this.id, err: errorMessage(err) }, 'closing job source failed');
    });
    return this.closingSource;
  }

  private async loop(): Promise<void> {
    /** Pauses before the next fresh source while sources keep failing; reset once a job is taken. */
    let retryPauses: Generator<number, never> | undefined;
    try {
      for (;;) {
        if (this.retired) break;
        if (this.paused) {
          await this.closeSource();
          this.state = 'paused';
          this.settledIn.open();
          await this.unpause.wait();
          continue;
        }
        try {
          if (!this.source) {
            await this.closingSource;
            if (!this.holdPermit()) continue;
            this.take = new AbortController();
            this.state = 'starting';
            const source = await this.queue.openSource(this.id);
            this.source = source;
            this.settledIn.open();
            // Paused or retired while opening: give it back at once.
            if (this.paused || this.retired) continue;
          }
          this.state = 'waiting';
          const job = await this.source.next(this.take.signal);
          if (!job) continue;
          retryPauses = undefined;
          this.permit = false;
          this.budget.spend();
          // Before the job starts (and so before it is acknowledged, which lets the broker push another): the next permit, or no consumer.
          this.holdPermit();
          await this.process(job);
        } catch (err) {
          retryPauses ??= growingDelays(SOURCE_RETRY_FIRST_MS, SOURCE_RETRY_CEILING_MS);
          await this.retrySource(err, retryPauses.next().value);
        }
      }
    } catch (err) {
      // Every failure of a source is retried above; reaching here is a bug.
      this.logger.error({ processor: this.id, err: errorMessage(err) }, 'processor stopped');
    } finally {
      await this.closeSource();
      this.state = 'stopped';
      this.settledIn.open();
      this.onStopped(this);
    }
  }

  /**
   * The source failed (its queue was deleted, access to it refused, a
   * broker node could not serve it): close it and, after `pauseMs`, let the
   * loop open a fresh one. A processor that left the pool instead would
   * leave the worker running with fewer processors, or none, and no sign
   * of it but this line.
   */
  private async retrySource(err: unknown, pauseMs: number): Promise<void> {
    this.logger.error({ processor: this.id, err: errorMessage(err), retry_in_ms: pauseMs }, 'the job source failed; opening a fresh one');
    await this.closeSource();
    this.state = 'starting';
    this.settledIn.open();
    // A pause or retirement ends the wait early (it aborts `take`); the loop then does what it asks.
    await abortableSleep(pauseMs, this.take.signal).catch(() => undefined);
  }

  /** Hold a permit of the job budget; without one, leave the pool (closing the source). False when it left. */
  private holdPermit(): boolean {
    if (this.permit) return true;
    if (this.budget.reserve()) {
      this.permit = true;
      return true;
    }
    this.logger.info({ processor: this.id, max_jobs: this.budget.limit, taken: this.budget.spent }, 'no job left to take under TRAVIS_WORKER_MAX_JOBS: the processor leaves the pool');
    this.retire();
    return false;
  }

  private async process(job: QueuedJob): Promise<void> {
    this.state = this.retired ? 'stopping' : 'processing';
    this.jobId = job.payload.jobId;
    this.lastJobId = this.jobId;
    try {
      await this.runJob(job, this.id);
    } catch (err) {
      // runJob settles every job itself; reaching here is a bug, but one
      // job's bug must not take the processor down with it.
      this.logger.error({ processor: this.id, job_id: this.jobId, err: errorMessage(err) }, 'job runner threw');
    }
    this.processed++;
    this.jobId = undefined;
    this.state = this.retired ? 'stopping' : this.paused ? 'paused' : 'waiting';
  }
}

