/**
 * A LogSink that keeps parts in memory, for tests of whatever writes logs.
 * It can be held (publishes wait until released, or forever), made to fail,
 * and awaited ("N parts published") so tests wait for events, not time.
 * It also records whether publishes were ever concurrent, which the
 * LogSink contract's users promise not to do.
 */
import type { LogPart, LogSink } from '../../src/queue/contract.js';

interface PartWaiter {
  count: number;
  resolve: (parts: LogPart[]) => void;
}

export class MemoryLogSink implements LogSink {
  /** Parts accepted, in the order they were accepted. */
  readonly parts: LogPart[] = [];
  /** Number of `publish` calls started, accepted or not. */
  publishCalls = 0;
  flushedCalls = 0;
  /** Times `publish` was called while another publish had not settled. */
  concurrentPublishes = 0;

  private inFlight = 0;
  private held = false;
  private releaseHeld: Array<() => void> = [];
  private publishError: Error | undefined;
  private flushedError: Error | undefined;
  private partWaiters: PartWaiter[] = [];
  private callWaiters: PartWaiter[] = [];

  async publish(part: LogPart): Promise<void> {
    if (this.inFlight > 0) this.concurrentPublishes++;
    this.inFlight++;
    this.publishCalls++;
    this.wake(this.callWaiters, this.publishCalls);
    try {
      if (this.held) await new Promise<void>((resolve) => this.releaseHeld.push(resolve));
      if (this.publishError) throw this.publishError;
      // Keep a copy: the writer must not be able to change a part once published.
      this.parts.push(structuredClone(part));
      this.wake(this.partWaiters, this.parts.length);
    } finally {
      this.inFlight--;
    }
  }

  async flushed(): Promise<void> {
    this.flushedCalls++;
    if (this.flushedError) throw this.flushedError;
  }

  /** Publishes from now on wait until `release()` (forever if it is never called). */
  hold(): void {
    this.held = true;
  }

  /** Let waiting and future publishes through. */
  release(): void {
    this.held = false;
    const waiting = this.releaseHeld;
    this.releaseHeld = [];
    for (const resolve of waiting) resolve();
  }

  /** Publishes from now on (including held ones, once released) reject with `error`. */
  failPublish(error: Error): void {
    this.publishError = error;
  }

  failFlushed(error: Error): void {
    this.flushedError = error;
  }

  /** Resolves with the parts once at least `count` were accepted. */
  partsPublished(count: number): Promise<LogPart[]> {
    return this.waitFor(this.partWaiters, this.parts.length, count);
  }

  /** Resolves once `publish` was called at least `count` times (accepted or not). */
  publishCalled(count: number): Promise<LogPart[]> {
    return this.waitFor(this.callWaiters, this.publishCalls, count);
  }

  /** All accepted parts' text, joined. */
  text(): string {
    return this.parts.map((part) => part.content).join('');
  }

  private waitFor(list: PartWaiter[], current: number, count: number): Promise<LogPart[]> {
    if (current >= count) return Promise.resolve(this.parts);
    return new Promise((resolve) => list.push({ count, resolve }));
  }

  private wake(list: PartWaiter[], current: number): void {
    for (let i = list.length - 1; i >= 0; i--) {
      const waiter = list[i] as PartWaiter;
      if (current >= waiter.count) {
        list.splice(i, 1);
        waiter.resolve(this.parts);
      }
    }
  }
}
