/**
 * A job's log parts on AMQP (docs/protocol.md, "Log parts"): published in order
 * on a confirm channel, pipelined up to a window of unconfirmed parts.
 * Waiting for the window (and for the channel's buffer to drain) is the
 * backpressure that slows down the reading of the script's output when
 * the broker is slow or away.
 *
 * A part is kept until the broker confirms it. When its channel or
 * connection dies first, or the broker refuses it, every unconfirmed part
 * is published again, in order and with its number, on the next channel
 * (after a reconnect, if need be): a consumer drops the duplicates by
 * number, and none go missing. A part still unconfirmed after the delivery
 * timeout fails the sink (`failed` aborts), and the job is requeued rather
 * than waiting on a broker without bound.
 */
import type { LogPart, LogSink } from '../contract.js';
import { errorMessage } from '../../errors.js';
import type { Logger } from '../../logger.js';
import { abortableSleep } from '../../util/abort.js';
import { timerDelay } from '../../util/timers.js';
import { republishPauses, type ConfirmPublisher } from './confirm-channel.js';
import { BrokerError } from './errors.js';
import { LOG_EVENT, LOG_QUEUE, REPORTING_EXCHANGE, SHARDED_LOG_EXCHANGE, logPartBody, publishOptions } from './messages.js';

/**
 * Parts published but not yet confirmed, at most. At the 1653-byte part
 * cap that is about 100 kB of log in flight per job: enough to keep a
 * remote broker's round trip from throttling a chatty build, small enough
 * to bound memory per job (travis has no window: it publishes without
 * confirms and loses parts when the channel dies).
 */
export const LOG_PUBLISH_WINDOW = 64;


export interface AmqpLogSinkOptions {
  publisher: ConfirmPublisher;
  jobId: number;
  /** The job's uuid, on every part. */
  uuid: string;
  /** Publish to `reporting.jobs.logs_sharded` with the job id as routing key. */
  sharding: boolean;
  /** Longest a part may stay unconfirmed (`TRAVIS_WORKER_LOG_DELIVERY_TIMEOUT`), retries included, before the sink fails. */
  deliveryTimeoutMs: number;
  /** Aborts when the job's delivery is lost: its parts are void, nothing more is sent. */
  lost: AbortSignal;
  /** The job's logger (it names the job already). */
  logger: Logger;
  /** Parts unconfirmed at most before `publish` waits; `LOG_PUBLISH_WINDOW` by default. */
  window?: number;
}

/** A part handed to the broker and not yet confirmed. */
interface Unconfirmed {
  readonly number: number;
  readonly body: Buffer;
  /** When it was first published: the delivery timeout runs from here. */
  readonly since: number;
  /** Which attempt (`AmqpLogSink.attempts`) carried it last. */
  attempt: number;
}

export class AmqpLogSink implements LogSink {
  private readonly exchange: string;
  private readonly routingKey: string;
  private readonly window: number;
  private readonly logger: Logger;
  /** The last publish in line: publishes run one after another, so parts go out in call order. */
  private tail: Promise<void> = Promise.resolve();
  /** In publishing order (a Map keeps insertion order), by number. */
  private readonly unconfirmed = new Map<number, Unconfirmed>();
  /** Woken whenever a part is confirmed or the sink fails. */
  private waiters: Array<() => void> = [];
  /** Aborts when nothing more can be sent: the delivery timeout passed, or the delivery was lost. */
  private readonly failure = new AbortController();
  /** Aborts only for the delivery timeout: a lost delivery is the job's `lost`, not a log failure. */
  private readonly undeliverable = new AbortController();
  /** Publishes made so far; the resend under way covers every attempt up to `resentFrom`. */
  private attempts = 0;
  private resentFrom = 0;
  private resending: Promise<void> | undefined;
  /** Set when a part failed while a resend was under way: go round once more. */
  private resendAgain = false;
  /**
   * The pause before the next resend: none at first, then growing while the
   * broker keeps refusing parts (a quorum queue nacks while it has no
   * leader), back to none once it confirms one. Each nack starts a resend of
   * its own, so a pause kept per resend would let a broker that nacks at
   * once drive a hot loop.
   */
  private resendPauses: Generator<number, never> | undefined;
  private deadline: NodeJS.Timeout | undefined;

  constructor(private readonly options: AmqpLogSinkOptions) {
    this.exchange = options.sharding ? SHARDED_LOG_EXCHANGE : REPORTING_EXCHANGE;
    this.routingKey = options.sharding ? String(options.jobId) : LOG_QUEUE;
    this.window = options.window ?? LOG_PUBLISH_WINDOW;
    this.logger = options.logger;
    const onLost = (): void => this.fail(options.lost.reason);
    if (options.lost.aborted) onLost();
    else options.lost.addEventListener('abort', onLost, { once: true });
  }

  /** Aborts, with the reason, once a part went unconfirmed past the delivery timeout. */
  get failed(): AbortSignal {
    return this.undeliverable.signal;
  }

  publish(part: LogPart): Promise<void> {
    const run = this.tail.then(() => this.send(part));
    this.tail = run.catch(() => undefined);
    return run;
  }

  async flushed(): Promise<void> {
    await this.tail;
    await this.until(() => this.unconfirmed.size === 0);
  }

  private async send(part: LogPart): Promise<void> {
    // Checked before waiting: this runs once per part, and most find room.
    if (this.unconfirmed.size >= this.window) await this.until(() => this.unconfirmed.size < this.window);
    // Parts being published again go out before new ones.
    while (this.resending) await this.resending;
    this.throwIfFailed();
    const body = logPartBody(this.options.jobId, this.options.uuid, part);
    const entry: Unconfirmed = { number: part.number, body, since: Date.now(), attempt: 0 };
    this.unconfirmed.set(part.number, entry);
    this.armDeadline();
    // A part that could not be handed over stays unconfirmed: the resend carries it.
    await this.transmit(entry);
  }

  /** Publish `entry` once; a failure (now, or of its confirm later) starts a resend. Resolves when the channel took it. */
  private async transmit(entry: Unconfirmed): Promise<void> {
    const attempt = ++this.attempts;
    entry.attempt = attempt;
    let result;
    try {
      result = await this.options.publisher.publish(this.exchange, this.routingKey, entry.body, publishOptions(LOG_EVENT), this.failure.signal);
    } catch (err) {
      this.partFailed(entry, attempt, err);
      return;
    }
    result.confirmed.then(
      () => this.confirmed(entry),
      (err: unknown) => this.partFailed(entry, attempt, err),
    );
    if (!result.written) await result.drained().catch((err: unknown) => this.partFailed(entry, attempt, err));
  }

  /** Any attempt's ack will do: the broker has the part either way. */
  private confirmed(entry: Unconfirmed): void {
    if (this.unconfirmed.get(entry.number) !== entry) return;
    this.unconfirmed.delete(entry.number);
    this.resendPauses = undefined;
    this.wake();
  }

  private partFailed(entry: Unconfirmed, attempt: number, err: unknown): void {
    if (this.failure.signal.aborted || this.unconfirmed.get(entry.number) !== entry) return;
    // A later attempt carries the part already, or the resend under way will.
    if (attempt < entry.attempt || (this.resending && attempt <= this.resentFrom)) return;
    if (this.resending) {
      this.resendAgain = true;
      return;
    }
    this.logger.warn(
      { part: entry.number, unconfirmed: this.unconfirmed.size, err: errorMessage(err) },
      'log parts were not confirmed by the broker; publishing them again with their numbers',
    );
    this.resending = this.resend().finally(() => {
      this.resending = undefined;
      this.wake();
    });
  }

  /** Publish every unconfirmed part again, in order, until each has been handed over once more (or the sink fails). */
  private async resend(): Promise<void> {
    for (;;) {
      try {
        await abortableSleep(this.resendPauses?.next().value ?? 0, this.failure.signal);
      } catch {
        return;
      }
      this.resendPauses ??= republishPauses();
      this.resendAgain = false;
      this.resentFrom = this.attempts;
      for (const entry of [...this.unconfirmed.values()]) {
        if (this.failure.signal.aborted) return;
        await this.transmit(entry);
      }
      if (!this.resendAgain) return;
    }
  }

  /**
   * Keep one timer running while parts are unconfirmed, due when the oldest
   * would pass the delivery timeout; past it the sink fails. The timer is
   * not moved on every confirm (two timer operations per part showed in
   * the worker's CPU per MB of log, `npm run bench`): when it fires early it looks
   * again at the oldest part and waits for the rest of its time.
   */
  private armDeadline(): void {
    if (this.deadline !== undefined || this.failure.signal.aborted) return;
    const oldest = this.unconfirmed.values().next();
    if (oldest.done) return;
    const remaining = oldest.value.since + this.options.deliveryTimeoutMs - Date.now();
    // unref: a timer left over from a finished job must not keep the process alive.
    this.deadline = setTimeout(() => this.deadlinePassed(), timerDelay(remaining)).unref();
  }

  private deadlinePassed(): void {
    this.deadline = undefined;
    const oldest = this.unconfirmed.values().next();
    if (oldest.done) return;
    const part = oldest.value;
    if (Date.now() < part.since + this.options.deliveryTimeoutMs) {
      this.armDeadline();
      return;
    }
    const err = new BrokerError(
      `log part ${part.number} of job ${this.options.jobId} was not confirmed by the broker within ${this.options.deliveryTimeoutMs} ms ` +
        `(TRAVIS_WORKER_LOG_DELIVERY_TIMEOUT); ${this.unconfirmed.size} parts undelivered`,
      'undeliverable',
    );
    this.logger.error({ err: err.message }, 'log parts undeliverable; the job will be requeued');
    this.fail(err);
    this.undeliverable.abort(err);
  }

  private fail(reason: unknown): void {
    if (this.failure.signal.aborted) return;
    clearTimeout(this.deadline);
    this.deadline = undefined;
    this.failure.abort(reason instanceof Error ? reason : new BrokerError(`log of job ${this.options.jobId} not delivered: ${String(reason)}`, 'closed'));
    this.wake();
  }

  private throwIfFailed(): void {
    if (this.failure.signal.aborted) throw this.failure.signal.reason;
  }

  /** Resolves once `ready()` holds; rejects once the sink failed. */
  private async until(ready: () => boolean): Promise<void> {
    for (;;) {
      this.throwIfFailed();
      if (ready()) return;
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const wake of waiters) wake();
  }
}
