/**
 * Cancel commands, delivered to the job they name whether it is running now
 * or arrives later. travis-ci/worker drops a cancel for a job it has not
 * received yet, so a job cancelled while queued ran anyway; here such
 * cancels are remembered for a while and applied on arrival.
 */
import type { CancelCommand } from '../queue/contract.js';

/**
 * A queued job is normally picked up within minutes; an hour covers a long
 * backlog. Beyond it, the hub has long since marked the job cancelled itself.
 */
export const CANCEL_MEMORY_MS = 60 * 60 * 1000;
/** Bounds memory if commands flood in for jobs this worker never sees (each entry is ~100 bytes). */
export const CANCEL_MEMORY_MAX_ENTRIES = 10_000;

type Listener = (command: CancelCommand) => void;

export class CancelRegistry {
  private readonly running = new Map<number, Listener>();
  /** Insertion-ordered, so the oldest entries are the first to go. */
  private readonly remembered = new Map<number, { command: CancelCommand; at: number }>();

  constructor(
    private readonly memoryMs = CANCEL_MEMORY_MS,
    private readonly maxEntries = CANCEL_MEMORY_MAX_ENTRIES,
    private readonly now: () => number = Date.now,
  ) {}

  /** A cancel arrived: stop the job if it runs here, else remember it. */
  cancel(command: CancelCommand): 'delivered' | 'remembered' {
    const listener = this.running.get(command.jobId);
    if (listener) {
      listener(command);
      return 'delivered';
    }
    this.forgetExpired();
    this.remembered.delete(command.jobId);
    this.remembered.set(command.jobId, { command, at: this.now() });
    while (this.remembered.size > this.maxEntries) {
      const oldest = this.remembered.keys().next().value as number;
      this.remembered.delete(oldest);
    }
    return 'remembered';
  }

  /**
   * Listen for the cancel of one job; a cancel remembered for it is delivered
   * at once. Returns the function that stops listening.
   */
  subscribe(jobId: number, listener: Listener): () => void {
    this.running.set(jobId, listener);
    this.forgetExpired();
    const early = this.remembered.get(jobId);
    if (early) {
      this.remembered.delete(jobId);
      listener(early.command);
    }
    return () => {
      if (this.running.get(jobId) === listener) this.running.delete(jobId);
    };
  }

  get rememberedCount(): number {
    return this.remembered.size;
  }

  private forgetExpired(): void {
    const cutoff = this.now() - this.memoryMs;
    for (const [jobId, entry] of this.remembered) {
      if (entry.at >= cutoff) break;
      this.remembered.delete(jobId);
    }
  }
}
