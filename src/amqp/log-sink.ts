/**
 * A job's log parts on AMQP (PROTOCOL.md, "Log part"): published in order
 * on a confirm channel, pipelined up to a window of unconfirmed parts.
 * Waiting for the window (and for the channel's buffer to drain) is the
 * backpressure that slows down the reading of the script's output when
 * the broker is slow.
 */
import type { LogPart, LogPartMeta, LogSink } from '../queue/contract.js';
import type { ConfirmPublisher } from './confirm-channel.js';
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
  /** Fills `meta.infra` when a part's meta leaves it empty. */
  infra?: string;
  /** Parts unconfirmed at most before `publish` waits; `LOG_PUBLISH_WINDOW` by default. */
  window?: number;
}

export class AmqpLogSink implements LogSink {
  private readonly exchange: string;
  private readonly routingKey: string;
  private readonly window: number;
  /** The last publish in line: publishes run one after another, so parts go out in call order. */
  private tail: Promise<void> = Promise.resolve();
  /** Confirms still outstanding. */
  private readonly pending = new Set<Promise<void>>();
  /** Woken whenever a confirm settles. */
  private confirmWaiters: Array<() => void> = [];
  /** The first failure (nack, dead channel): sticky, since a log with a hole is broken anyway. */
  private failure: Error | undefined;

  constructor(private readonly options: AmqpLogSinkOptions) {
    this.exchange = options.sharding ? SHARDED_LOG_EXCHANGE : REPORTING_EXCHANGE;
    this.routingKey = options.sharding ? String(options.jobId) : LOG_QUEUE;
    this.window = options.window ?? LOG_PUBLISH_WINDOW;
  }

  publish(part: LogPart): Promise<void> {
    const run = this.tail.then(() => this.send(part));
    this.tail = run.catch(() => undefined);
    return run;
  }

  async flushed(): Promise<void> {
    await this.tail;
    await Promise.all([...this.pending]);
    if (this.failure) throw this.failure;
  }

  private async send(part: LogPart): Promise<void> {
    while (!this.failure && this.pending.size >= this.window) {
      await new Promise<void>((resolve) => this.confirmWaiters.push(resolve));
    }
    if (this.failure) throw this.failure;
    const body = logPartBody(this.options.jobId, this.options.uuid, this.withInfra(part));
    let result;
    try {
      result = await this.options.publisher.publish(this.exchange, this.routingKey, body, publishOptions(LOG_EVENT));
    } catch (err) {
      throw this.fail(err);
    }
    const confirmed: Promise<void> = result.confirmed.then(
      () => this.settled(confirmed),
      (err: unknown) => {
        this.fail(err);
        this.settled(confirmed);
      },
    );
    this.pending.add(confirmed);
    if (!result.written) {
      try {
        await result.drained();
      } catch (err) {
        throw this.fail(err);
      }
    }
  }

  private settled(confirm: Promise<void>): void {
    this.pending.delete(confirm);
    const waiters = this.confirmWaiters;
    this.confirmWaiters = [];
    for (const wake of waiters) wake();
  }

  private fail(err: unknown): Error {
    this.failure ??=
      err instanceof Error ? err : new BrokerError(`log part of job ${this.options.jobId} not delivered: ${String(err)}`, 'closed');
    return this.failure;
  }

  private withInfra(part: LogPart): LogPart {
    if (!part.meta || part.meta.infra || !this.options.infra) return part;
    const meta: LogPartMeta = { ...part.meta, infra: this.options.infra };
    return { ...part, meta };
  }
}
