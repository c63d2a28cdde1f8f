/**
 * One job run's log: bytes from the script (and the worker's own lines) in,
 * numbered parts out to a LogSink (docs/protocol.md, "Log parts").
 *
 * What this does that travis-ci/worker's amqp_log_writer.go does not:
 * - `close` publishes everything still buffered before the final part
 *   (travis could lose the tail written after its last tick);
 * - a write that crosses the maximum length is cut at the limit instead of
 *   being dropped whole, and the cut falls between characters;
 * - parts never split a UTF-8 sequence, and their text is valid UTF-8;
 * - a sink failure is reported to the writer's caller, not only logged;
 * - writes wait while too much is unpublished, so a slow broker slows the
 *   reading of the script's output instead of growing memory.
 *
 * It is one module, over the usual size, because those guarantees share one
 * state (buffered bytes, the length cap, part numbers, the final part, the
 * waiters of backpressure): split, each half would have to see the other's.
 */
import { isUtf8 } from 'node:buffer';
import { Writable } from 'node:stream';
import type { LogPart, LogPartMeta, LogSink } from '../queue/contract.js';
import { ByteQueue } from './byte-queue.js';
import { characterStart, completeEnd, truncateUtf8 } from './utf8.js';

/** travis: 500 ms flush interval; 1653 bytes = (10 kB downstream message limit - envelope) / 6 for worst-case JSON escaping. */
export const LOG_FLUSH_INTERVAL_MS = 500;
export const LOG_PART_MAX_BYTES = 1653;
/**
 * Unpublished bytes above which writes wait: about 40 parts in flight or
 * queued, enough to keep a pipelining sink busy, small enough that a few
 * hundred concurrent jobs stay within a few tens of MB.
 */
export const LOG_HIGH_WATER_MARK_BYTES = 64 * 1024;
/**
 * Bytes `stream` buffers before its writer (the script's output) must wait,
 * on top of `LOG_HIGH_WATER_MARK_BYTES`. 16 KiB is Node 20's default for
 * byte streams; Node 22 raised the default to 64 KiB, which would make the
 * memory a job may hold depend on the Node version it runs on.
 */
export const LOG_STREAM_HIGH_WATER_MARK_BYTES = 16 * 1024;

/**
 * Bytes of the maximum length kept back from the script's output for the
 * worker's closing message, so the message saying why a job ended shows and
 * the whole log still fits the maximum. The longest the worker writes is the
 * cancel message with a reason of up to 1 KiB (MAX_CANCEL_TEXT_BYTES);
 * a longer trailer is cut to the room left.
 */
export const LOG_TRAILER_RESERVE_BYTES = 2048;

/** The longest UTF-8 sequence; a part must hold at least one character. */
const MIN_PART_BYTES = 4;

export interface LogWriterOptions {
  sink: LogSink;
  /**
   * Bytes the whole log may hold, the close trailer included
   * (`TRAVIS_WORKER_MAX_LOG_LENGTH`); output past `maxLogBytes -
   * trailerReserveBytes` is dropped.
   */
  maxLogBytes: number;
  /** Bytes kept back for the close trailer; default `LOG_TRAILER_RESERVE_BYTES`, less than `maxLogBytes`. */
  trailerReserveBytes?: number;
  /**
   * Called on every write of output, before it is buffered (also past the
   * maximum length, which drops the output but not the fact that the job
   * printed): the job's clock measures silence from it. Must not throw.
   */
  onOutput?: () => void;
  /** Called once when the log would exceed `maxLogBytes`. Must not throw. */
  onMaxLength: () => void;
  /** Milliseconds a partial part may wait before it is published; default `LOG_FLUSH_INTERVAL_MS`. */
  flushIntervalMs?: number;
  /** Largest part, in bytes of UTF-8; default `LOG_PART_MAX_BYTES`, at least 4. */
  partMaxBytes?: number;
  /** Buffered-but-unpublished bytes above which writes wait; default `LOG_HIGH_WATER_MARK_BYTES`. */
  highWaterMarkBytes?: number;
}

interface Waiter {
  ready: () => boolean;
  resolve: () => void;
  reject: (err: unknown) => void;
}

const EMPTY = Buffer.alloc(0);

/**
 * The travis fold markers around `body`, exactly as travis writes them
 * (package.go): the web UI collapses the lines between them under `name`.
 */
export function fold(name: string, body: string): string {
  return `${foldStart(name)}${body}${body.endsWith('\n') ? '' : '\n'}${foldEnd(name)}`;
}

export function foldStart(name: string): string {
  return `travis_fold:start:${name}\r\x1b[0K`;
}

export function foldEnd(name: string): string {
  return `travis_fold:end:${name}\r\x1b[0K`;
}

export class LogWriter {
  /**
   * A Writable over `write()` for piping script output: its callback waits
   * as `write()` does. Ending or destroying it does not close the log,
   * since the worker writes its own trailer after the script's output.
   */
  readonly stream: Writable;

  private readonly sink: LogSink;
  private readonly maxLogBytes: number;
  /** Bytes of output (the worker's own lines included) the log takes before `onMaxLength`. */
  private readonly maxOutputBytes: number;
  private readonly onOutput: (() => void) | undefined;
  private readonly onMaxLength: () => void;
  private readonly flushIntervalMs: number;
  private readonly partMaxBytes: number;
  private readonly highWaterMarkBytes: number;

  /** Valid UTF-8 waiting to be published. */
  private readonly queue = new ByteQueue();
  /** The start of a UTF-8 sequence whose remaining bytes have not arrived yet (0-3 bytes). */
  private carry: Buffer = EMPTY;
  private readonly decoder = new TextDecoder('utf-8', { ignoreBOM: true });

  private accepted = 0;
  private maxLengthReached = false;
  /** Bytes ever put in `queue`, taken off it, and published (resolved by the sink). */
  private enqueuedBytes = 0;
  private takenBytes = 0;
  private publishedBytes = 0;
  /** Partial parts are published until `takenBytes` reaches this. */
  private flushUpTo = 0;
  private nextNumber = 0;
  private published = 0;
  private startedMeta: LogPartMeta | undefined;

  private pumping = false;
  private finalRequested = false;
  private finalTaken = false;
  private finalPublished = false;
  private closed = false;
  private closePromise: Promise<void> | undefined;
  private failure: { error: unknown } | undefined;
  private waiters: Waiter[] = [];

  private flushTimer: NodeJS.Timeout | undefined;

  constructor(options: LogWriterOptions) {
    this.sink = options.sink;
    this.maxLogBytes = options.maxLogBytes;
    const reserve = options.trailerReserveBytes ?? LOG_TRAILER_RESERVE_BYTES;
    if (!(reserve >= 0 && reserve < this.maxLogBytes)) {
      throw new RangeError(`trailerReserveBytes must be at least 0 and less than maxLogBytes (${this.maxLogBytes}), got ${reserve}`);
    }
    this.maxOutputBytes = this.maxLogBytes - reserve;
    this.onOutput = options.onOutput;
    this.onMaxLength = options.onMaxLength;
    this.flushIntervalMs = options.flushIntervalMs ?? LOG_FLUSH_INTERVAL_MS;
    this.partMaxBytes = options.partMaxBytes ?? LOG_PART_MAX_BYTES;
    this.highWaterMarkBytes = options.highWaterMarkBytes ?? LOG_HIGH_WATER_MARK_BYTES;
    if (!(this.partMaxBytes >= MIN_PART_BYTES)) {
      throw new RangeError(`partMaxBytes must be at least ${MIN_PART_BYTES}, got ${this.partMaxBytes}`);
    }
    this.stream = new Writable({
      highWaterMark: LOG_STREAM_HIGH_WATER_MARK_BYTES,
      write: (chunk: Buffer, _encoding, callback) => {
        this.write(chunk).then(() => callback(), callback);
      },
    });
    // A failed sink fails the stream too, which tells a run piping into it to
    // stop. The run may have stopped already (the job's stop signal heard of
    // the failure first) and taken its listener with it: an 'error' nobody
    // listens to would crash the worker. `write`, `flush` and `close` report
    // the failure to the job.
    this.stream.on('error', () => {});
  }

  /** Bytes of output accepted into the log (at most `maxLogBytes - trailerReserveBytes`; the close trailer is not counted). */
  get bytesWritten(): number {
    return this.accepted;
  }

  /** Parts the sink has accepted, the final one included. */
  get partsPublished(): number {
    return this.published;
  }

  /**
   * Buffer `chunk`. Resolves once fewer than the high-water mark of bytes
   * are unpublished; rejects with the sink's error once the sink failed.
   * Ignored after `close`.
   */
  write(chunk: Uint8Array | string): Promise<void> {
    if (this.failure) return Promise.reject(this.failure.error);
    if (this.closed) return Promise.resolve();
    if (chunk.length === 0) return this.unpublishedBelowHighWater();
    this.onOutput?.();
    if (this.maxLengthReached) return this.unpublishedBelowHighWater();

    // Copy: the caller may reuse its buffer once we return.
    const incoming = typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : Buffer.from(chunk);
    const data = this.carry.length === 0 ? incoming : Buffer.concat([this.carry, incoming]);
    const complete = completeEnd(data, data.length);
    this.carry = Buffer.from(data.subarray(complete));
    if (!this.accept(data.subarray(0, complete))) {
      this.maxLengthReached = true;
      this.carry = EMPTY;
      this.onMaxLength();
    }
    return this.unpublishedBelowHighWater();
  }

  /** Attach `meta` to the next part published (the first after `started`). */
  setStartedMeta(meta: LogPartMeta): void {
    this.startedMeta = meta;
  }

  /** Publish everything buffered (no final part), then wait until the sink has delivered it. */
  async flush(): Promise<void> {
    if (this.failure) throw this.failure.error;
    const target = this.enqueuedBytes;
    this.flushUpTo = Math.max(this.flushUpTo, target);
    this.pump();
    await this.waitFor(() => this.publishedBytes >= target);
    await this.sinkFlushed();
  }

  /**
   * End the log: append `trailer` (in the room kept back for it, so the
   * message saying why the job ended shows; cut if longer), publish
   * everything, then the final part, then wait for the sink to deliver.
   * Idempotent.
   */
  close(trailer?: string): Promise<void> {
    this.closePromise ??= this.closeOnce(trailer);
    return this.closePromise;
  }

  private async closeOnce(trailer: string | undefined): Promise<void> {
    this.closed = true;
    this.clearFlushTimer();
    if (this.failure) throw this.failure.error;
    // The output ended inside a character: show that as U+FFFD, if it fits
    // (the log is ending, so there is nothing left to stop when it does not).
    this.accept(this.carry);
    this.carry = EMPTY;
    if (trailer) this.enqueue(Buffer.from(truncateUtf8(trailer, this.maxLogBytes - this.accepted), 'utf8'));
    this.flushUpTo = this.enqueuedBytes;
    this.finalRequested = true;
    this.pump();
    await this.waitFor(() => this.finalPublished);
    await this.sinkFlushed();
  }

  /**
   * Add complete (possibly invalid) UTF-8 to the output as valid UTF-8, as
   * much as the room left for output holds, cut between characters. The
   * room is counted after invalid bytes became U+FFFD (three bytes each),
   * since that is what the log holds. False when it did not all fit.
   */
  private accept(bytes: Buffer): boolean {
    if (bytes.length === 0) return true;
    const valid = isUtf8(bytes) ? bytes : Buffer.from(this.decoder.decode(bytes), 'utf8');
    const room = this.maxOutputBytes - this.accepted;
    const fits = valid.length <= room;
    // Exactly up to the limit, minus a character the limit would split.
    const end = fits ? valid.length : characterStart(valid, room);
    this.accepted += end;
    this.enqueue(valid.subarray(0, end));
    this.afterEnqueue();
    return fits;
  }

  /** Add valid UTF-8 to the queue. */
  private enqueue(valid: Buffer): void {
    if (valid.length === 0) return;
    this.queue.push(valid);
    this.enqueuedBytes += valid.length;
  }

  private afterEnqueue(): void {
    this.pump();
    this.armFlushTimer();
  }

  private unpublishedBelowHighWater(): Promise<void> {
    return this.waitFor(() => this.enqueuedBytes - this.publishedBytes < this.highWaterMarkBytes);
  }

  private waitFor(ready: () => boolean): Promise<void> {
    if (this.failure) return Promise.reject(this.failure.error);
    if (ready()) return Promise.resolve();
    return new Promise((resolve, reject) => this.waiters.push({ ready, resolve, reject }));
  }

  private settleWaiters(): void {
    const still: Waiter[] = [];
    for (const waiter of this.waiters) {
      if (waiter.ready()) waiter.resolve();
      else still.push(waiter);
    }
    this.waiters = still;
  }

  private fail(error: unknown): void {
    this.failure ??= { error };
    this.clearFlushTimer();
    const waiters = this.waiters;
    this.waiters = [];
    for (const waiter of waiters) waiter.reject(this.failure.error);
  }

  private async sinkFlushed(): Promise<void> {
    try {
      await this.sink.flushed();
    } catch (err) {
      this.fail(err);
      throw this.failure?.error ?? err;
    }
  }

  /** The next part to publish, if one is due: full parts at once, partial ones when flushed. */
  private takePart(): { part: LogPart; bytes: number } | undefined {
    const queued = this.queue.length;
    let part: LogPart;
    let bytes = 0;
    if (queued >= this.partMaxBytes || (queued > 0 && this.takenBytes < this.flushUpTo)) {
      let buffer: Buffer;
      if (queued > this.partMaxBytes) {
        const head = this.queue.peek(this.partMaxBytes + 1);
        bytes = characterStart(head, this.partMaxBytes);
        buffer = head.subarray(0, bytes);
      } else {
        bytes = queued;
        buffer = this.queue.peek(queued);
      }
      this.queue.drop(bytes);
      this.takenBytes += bytes;
      part = { number: this.nextNumber++, content: buffer.toString('utf8'), final: false };
    } else if (queued === 0 && this.finalRequested && !this.finalTaken) {
      this.finalTaken = true;
      part = { number: this.nextNumber++, content: '', final: true };
    } else {
      return undefined;
    }
    if (this.startedMeta) {
      part.meta = this.startedMeta;
      this.startedMeta = undefined;
    }
    return { part, bytes };
  }

  /** Publish due parts one at a time, in number order, until none is due. */
  private pump(): void {
    if (this.pumping || this.failure) return;
    this.pumping = true;
    void this.pumpLoop();
  }

  private async pumpLoop(): Promise<void> {
    try {
      for (let next = this.takePart(); next; next = this.takePart()) {
        await this.sink.publish(next.part);
        this.published++;
        this.publishedBytes += next.bytes;
        if (next.part.final) this.finalPublished = true;
        this.settleWaiters();
      }
    } catch (err) {
      this.fail(err);
    } finally {
      this.pumping = false;
    }
  }

  private armFlushTimer(): void {
    if (this.flushTimer || this.closed || this.failure || this.queue.length === 0) return;
    this.flushTimer = setTimeout(() => {
      this.flushTimer = undefined;
      this.flushUpTo = Math.max(this.flushUpTo, this.enqueuedBytes);
      this.pump();
    }, this.flushIntervalMs);
    this.flushTimer.unref();
  }

  private clearFlushTimer(): void {
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
  }
}
