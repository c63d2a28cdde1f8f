/**
 * The processor pool: `TRAVIS_WORKER_POOL_SIZE` processors, each taking one
 * job at a time from its own source (its own AMQP channel with prefetch 1,
 * as travis does) and running it to the end.
 */
import { errorMessage } from './errors.js';
import type { Logger } from './log.js';
import type { JobQueue, JobSource, QueuedJob } from './queue/contract.js';
import type { JobResult } from './job/run-job.js';

export type ProcessorState = 'waiting' | 'processing' | 'stopped';

export interface ProcessorStatus {
  id: string;
  state: ProcessorState;
  /** The job being processed, if any. */
  jobId?: number;
  processed: number;
}

export type RunJob = (job: QueuedJob, processorId: string) => Promise<JobResult>;

class Processor {
  state: ProcessorState = 'waiting';
  jobId: number | undefined;
  processed = 0;
  private readonly stopTaking = new AbortController();
  readonly done: Promise<void>;

  constructor(
    readonly id: string,
    private readonly source: JobSource,
    private readonly runJob: RunJob,
    private readonly logger: Logger,
  ) {
    this.done = this.loop();
  }

  /** Stop taking jobs; the job in hand (if any) runs on. */
  stop(): void {
    this.stopTaking.abort();
  }

  status(): ProcessorStatus {
    return {
      id: this.id,
      state: this.state,
      processed: this.processed,
      ...(this.jobId === undefined ? {} : { jobId: this.jobId }),
    };
  }

  private async loop(): Promise<void> {
    try {
      for (;;) {
        const job = await this.source.next(this.stopTaking.signal);
        if (!job) break;
        this.state = 'processing';
        this.jobId = job.payload.jobId;
        try {
          await this.runJob(job, this.id);
        } catch (err) {
          // runJob settles every job itself; reaching here is a bug, but one
          // job's bug must not take the processor down with it.
          this.logger.error({ processor: this.id, job_id: this.jobId, err: errorMessage(err) }, 'job runner threw');
        }
        this.processed++;
        this.state = 'waiting';
        this.jobId = undefined;
      }
    } catch (err) {
      this.logger.error({ processor: this.id, err: errorMessage(err) }, 'processor stopped: its job source failed');
    } finally {
      this.state = 'stopped';
      await this.source.close().catch((err: unknown) => {
        this.logger.warn({ processor: this.id, err: errorMessage(err) }, 'closing job source failed');
      });
    }
  }
}

export class ProcessorPool {
  private readonly processors: Processor[] = [];
  private nextId = 1;

  constructor(
    private readonly queue: JobQueue,
    private readonly runJob: RunJob,
    private readonly logger: Logger,
    private readonly hostname: string,
  ) {}

  /** Add `count` processors, each with its own source. */
  async grow(count: number): Promise<void> {
    for (let i = 0; i < count; i++) {
      const id = `${this.hostname}:${this.nextId++}`;
      const source = await this.queue.openSource(id);
      this.processors.push(new Processor(id, source, this.runJob, this.logger));
    }
    this.logger.info({ pool_size: this.size }, 'processors started');
  }

  get size(): number {
    return this.processors.filter((p) => p.state !== 'stopped').length;
  }

  status(): ProcessorStatus[] {
    return this.processors.map((p) => p.status());
  }

  /** Stop taking jobs and wait for every processor's job in hand to settle. */
  async stop(): Promise<void> {
    for (const processor of this.processors) processor.stop();
    await Promise.all(this.processors.map((p) => p.done));
  }
}
