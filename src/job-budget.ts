/**
 * `TRAVIS_WORKER_MAX_JOBS`: how many jobs the pool may still take, in all.
 *
 * A limit checked only when a job arrives would come too late: with
 * prefetch 1, every processor whose consumer is open may be handed a job
 * at any moment. So a processor holds a permit for as long as its consumer
 * is open (src/processor.ts), and there are never more open consumers than
 * jobs left to take: job N+1 is never delivered here, let alone started.
 * The processor that takes a job on its permit asks for the next one at
 * once, and without one it cancels its consumer before its job even starts.
 */
import { EventEmitter } from 'node:events';

export interface JobBudgetEvents {
  /** The last job allowed was taken. */
  spent: [];
}

export class JobBudget extends EventEmitter<JobBudgetEvents> {
  private taken = 0;
  /** Permits held by processors with an open consumer. */
  private held = 0;

  /** `limit`: jobs the pool may take in all; Infinity for no limit. */
  constructor(readonly limit: number) {
    super();
  }

  /** Jobs taken so far. */
  get spent(): number {
    return this.taken;
  }

  /** A permit to open a consumer; false when every job left is already spoken for. */
  reserve(): boolean {
    if (this.taken + this.held >= this.limit) return false;
    this.held++;
    return true;
  }

  /** Give a permit back (its consumer closed without a job). */
  release(): void {
    this.held = Math.max(0, this.held - 1);
  }

  /** A job was taken on a permit. */
  spend(): void {
    this.release();
    this.taken++;
    if (this.taken === this.limit) this.emit('spent');
  }
}
