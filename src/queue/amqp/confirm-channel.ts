/**
 * A publisher-confirm channel opened on first use and opened again after
 * it closed (a channel dies on e.g. a publish to a missing exchange, or
 * with its connection; the next publish should not inherit that). While
 * the connection is down, a publish waits for it to come back. Every
 * publish returns whether the channel's buffer took it without going over
 * its high-water mark, and a promise of the broker's confirm.
 */
import type { ChannelModel, ConfirmChannel, Options } from 'amqplib';
import { errorMessage } from '../../errors.js';
import type { Logger } from '../../logger.js';
import { raceAbort } from '../../util/abort.js';
import { growingDelays } from '../../util/backoff.js';
import { BrokerError } from './errors.js';
import { closeChannel } from './close-channel.js';

/**
 * Pauses between attempts to publish again what the broker did not confirm
 * (log parts, state updates): 100 ms doubling to 5 s. Short enough that a
 * reopened channel is used at once, long enough that a channel which keeps
 * dying (a refused exchange) is not reopened in a tight loop.
 */
export function republishPauses(): Generator<number, never> {
  return growingDelays(100, 5_000);
}

export interface PublishResult {
  /** False when the channel's write buffer is full: wait for `drained()` before publishing more. */
  written: boolean;
  /** Resolves on the broker's ack; rejects (BrokerError) on a nack or when the channel closes first. Always handle it. */
  confirmed: Promise<void>;
  /** Resolves when the channel's buffer drained; rejects (BrokerError) if the channel closed first. */
  drained(): Promise<void>;
}

/** What publishers need: the seam unit tests replace with an in-memory fake. */
export interface ConfirmPublisher {
  /** Hand a message to the channel; waits (until `signal` aborts) while the connection is down. */
  publish(exchange: string, routingKey: string, content: Buffer, options: Options.Publish, signal: AbortSignal): Promise<PublishResult>;
}

export class ConfirmChannelSlot implements ConfirmPublisher {
  private channel: ConfirmChannel | undefined;
  private opening: Promise<ConfirmChannel> | undefined;
  private closed = false;
  /** Aborts a wait for the connection when the slot closes. */
  private readonly closing = new AbortController();

  constructor(
    /** The connection, once it is up (waits while it reconnects); rejects when the signal aborts. */
    private readonly connection: (signal: AbortSignal) => Promise<ChannelModel>,
    private readonly logger: Logger,
    /** For log lines: what the channel carries (`states`, `logs`). */
    private readonly purpose: string,
  ) {}

  async publish(exchange: string, routingKey: string, content: Buffer, options: Options.Publish, signal: AbortSignal): Promise<PublishResult> {
    signal.throwIfAborted();
    // The channel is there for all but the first publish (or one after it died): no wait to race then.
    const channel = this.channel ?? (await raceAbort(this.get(), signal));
    let confirm!: (err: unknown) => void;
    const confirmed = new Promise<void>((resolve, reject) => {
      confirm = (err) => {
        if (err === null || err === undefined) resolve();
        else if (errorMessage(err) === 'message nacked') {
          this.replace(channel);
          reject(new BrokerError(`the broker refused a ${this.purpose} message (nack)`, 'nacked', { cause: err }));
        } else {
          reject(new BrokerError(`the ${this.purpose} channel closed before the broker confirmed a message`, 'closed', { cause: err }));
        }
      };
    });
    let written: boolean;
    try {
      written = channel.publish(exchange, routingKey, content, options, (err) => confirm(err));
    } catch (err) {
      // amqplib throws synchronously once the channel is closing or closed.
      throw new BrokerError(`could not publish on the ${this.purpose} channel: ${errorMessage(err)}`, 'closed', { cause: err });
    }
    return { written, confirmed, drained: () => drained(channel, this.purpose) };
  }

  /** Close the channel (if open); later publishes fail. Never throws. */
  async close(): Promise<void> {
    this.closed = true;
    this.closing.abort(new BrokerError(`the ${this.purpose} channel is closed`, 'closed'));
    const channel = this.channel ?? (await this.opening?.catch(() => undefined));
    this.channel = undefined;
    if (channel) await closeChannel(channel, this.logger, this.purpose);
  }

  /**
   * Publish on a fresh channel from now on, and close `channel`. A channel
   * keeps what it learnt of each quorum queue: one opened while the queue
   * had no leader (its node just died) goes on refusing publishes (nack)
   * after the queue has a new one, where a fresh channel finds it.
   */
  private replace(channel: ConfirmChannel): void {
    if (this.channel !== channel) return;
    this.channel = undefined;
    void closeChannel(channel, this.logger, this.purpose);
  }

  private get(): Promise<ConfirmChannel> {
    if (this.closed) return Promise.reject(new BrokerError(`the ${this.purpose} channel is closed`, 'closed'));
    if (this.channel) return Promise.resolve(this.channel);
    this.opening ??= this.open().finally(() => {
      this.opening = undefined;
    });
    return this.opening;
  }

  private async open(): Promise<ConfirmChannel> {
    let channel: ConfirmChannel;
    try {
      channel = await (await this.connection(this.closing.signal)).createConfirmChannel();
    } catch (err) {
      throw new BrokerError(`could not open the ${this.purpose} channel: ${errorMessage(err)}`, 'closed', { cause: err });
    }
    channel.on('error', (err: Error) => {
      this.logger.error({ channel: this.purpose, err: err.message }, 'AMQP channel error');
    });
    channel.on('close', () => {
      if (this.channel === channel) this.channel = undefined;
    });
    if (this.closed) {
      await closeChannel(channel, this.logger, this.purpose);
      throw new BrokerError(`the ${this.purpose} channel is closed`, 'closed');
    }
    this.channel = channel;
    return channel;
  }
}

function drained(channel: ConfirmChannel, purpose: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onDrain = (): void => {
      channel.off('close', onClose);
      resolve();
    };
    const onClose = (): void => {
      channel.off('drain', onDrain);
      reject(new BrokerError(`the ${purpose} channel closed while its buffer was full`, 'closed'));
    };
    channel.once('drain', onDrain);
    channel.once('close', onClose);
  });
}
