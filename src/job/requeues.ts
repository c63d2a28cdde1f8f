/**
 * Requeues of the same job, counted so that a job which can never run (a
 * poison job: every attempt fails the same way) is stopped instead of going
 * round for ever. A requeue works differently on each queue (AMQP: the worker
 * publishes `reset` and acks, and the hub queues the job again; file queue:
 * the file goes back to `10-created.d`), but both come back to a worker as
 * the same job id, so the count is kept here, per job id, whatever the queue.
 *
 * The count lives in this worker's memory: a job bouncing between workers
 * is stopped by whichever sees it `limit` times first, and a restart starts
 * afresh, which is what a requeue on shutdown expects.
 */
import type { JobResult } from './outcome.js';

/**
 * A few requeues of one job are normal in an outage (the circuit breaker
 * pauses the worker after five failed starts in a row); ten of the same job
 * in a row on one worker is past any outage that passes.
 */
export const DEFAULT_REQUEUE_LIMIT = 10;
/** Bounds memory if many different jobs are requeued and never seen again (each entry is a few dozen bytes). */
export const REQUEUE_MEMORY_MAX_ENTRIES = 10_000;

export class RequeueCounter {
  /** Insertion-ordered, so the oldest entries are the first to go. */
  private readonly counts = new Map<number, number>();

  /**
   * @param limit requeues of one job in a row before it is ended instead (`TRAVIS_WORKER_REQUEUE_LIMIT`); 0 = no limit.
   */
  constructor(
    readonly limit = DEFAULT_REQUEUE_LIMIT,
    private readonly maxEntries = REQUEUE_MEMORY_MAX_ENTRIES,
  ) {}

  /**
   * The job is about to be requeued: count it and say whether that is still
   * allowed. Past the limit the count is forgotten, as the job is ended.
   */
  admit(jobId: number): boolean {
    const count = (this.counts.get(jobId) ?? 0) + 1;
    this.counts.delete(jobId);
    if (this.limit > 0 && count > this.limit) return false;
    this.counts.set(jobId, count);
    while (this.counts.size > this.maxEntries) this.counts.delete(this.counts.keys().next().value as number);
    return true;
  }

  /**
   * A run of the job ended with `result`. Once finished (a terminal state
   * published), its next requeue, if it ever comes back, counts from one; a
   * requeued or abandoned run leaves the count as it is.
   */
  settled(jobId: number, result: JobResult): void {
    if (result.outcome === 'finished') this.counts.delete(jobId);
  }
}
