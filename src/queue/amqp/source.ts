/**
 * The jobs one processor takes: its own channel on the jobs connection with
 * prefetch 1, consumer tag `build-job-consumer` and `x-priority`, manual
 * acknowledgement (docs/protocol.md, "Consuming jobs"). Its state updates and log
 * parts go on confirm channels of its own.
 *
 * If the channel closes (e.g. RabbitMQ's `consumer_timeout`, or the
 * connection is lost), the job in flight is lost (the broker redelivers it)
 * and the next `next()` opens a fresh channel and consumer, once the
 * connection is back.
 *
 * RabbitMQ can keep a consumer registered and deliver it nothing: after a
 * whole cluster restarted, a quorum job queue listed the worker's consumer
 * and held jobs for minutes while none came; a consumer made afresh got
 * them, and where a fresh one on the same node got nothing either, one on
 * another node did. So an idle consumer asks every `stallCheckMs` whether
 * jobs wait; when they did at two asks in a row with none delivered in
 * between, it is dropped and the next `next()` consumes again on a fresh
 * channel; when that one stalls too, the queue is told (`onStalled`), which
 * moves the connection to another node once no job runs on it.
 *
 * Over the usual size on purpose: the channel's life, the consumer, the
 * delivery in flight and what a lost channel means for it are one state
 * machine, and reading it whole is what makes its races visible.
 */
import type { Channel, ChannelModel, ConsumeMessage } from 'amqplib';
import { errorMessage } from '../../errors.js';
import { raceAbort } from '../../util/abort.js';
import { parseJobPayload, type JobPayload } from '../../job/payload.js';
import type { Logger } from '../../logger.js';
import type { JobSource, QueuedJob } from '../contract.js';
import { ConfirmChannelSlot } from './confirm-channel.js';
import { BrokerError, CONSUMER_TIMEOUT_ADVICE, isConsumerTimeout } from './errors.js';
import { AmqpQueuedJob } from './job.js';
import type { BrokerLink } from './reconnecting.js';
import type { ReportedJobs } from './reported-jobs.js';
import { closeChannel } from './close-channel.js';

/** Travis's consumer tag; amqplib needs tags unique per channel only, and each source has its own channel. */
export const JOB_CONSUMER_TAG = 'build-job-consumer';

export interface AmqpJobSourceOptions {
  processorId: string;
  queueName: string;
  consumerPriority: number;
  payloadMaxBytes: number;
  sharding: boolean;
  /** `TRAVIS_WORKER_LOG_DELIVERY_TIMEOUT`, for each job's log parts and state updates. */
  deliveryTimeoutMs: number;
  /** Final reports whose acknowledgement is still due, shared by the queue's sources. */
  reported: ReportedJobs;
  /** The jobs connection (consumer and states). */
  jobs: BrokerLink;
  /** The logs connection (may be the jobs one). */
  logs: BrokerLink;
  /** Jobs ready in the queue now (throws when that can't be known). */
  readyJobs: () => Promise<number>;
  /** How often an idle consumer asks `readyJobs`, in ms. */
  stallCheckMs: number;
  /** A fresh consumer stalled as the one before it did: its node does not serve the queue. */
  onStalled: () => void;
  logger: Logger;
  /** Called once the source is closed, so the queue forgets it. */
  onClosed: () => void;
}

interface Consumer {
  channel: Channel;
  tag: string;
  /** Set when the channel closed or the broker cancelled the consumer. */
  gone: boolean;
}

interface Ready {
  message: ConsumeMessage;
  payload: JobPayload;
  consumer: Consumer;
}

export class AmqpJobSource implements JobSource {
  private readonly logger: Logger;
  private readonly states: ConfirmChannelSlot;
  private readonly logs: ConfirmChannelSlot;
  private consumer: Consumer | undefined;
  private starting: Promise<Consumer | undefined> | undefined;
  /** Parsed deliveries not yet handed out (at most one with prefetch 1). */
  private ready: Ready[] = [];
  /** Woken on a delivery, a lost consumer, or close. */
  private wakers = new Set<() => void>();
  /** Jobs handed out and not yet settled. */
  private readonly inFlight = new Set<AmqpQueuedJob>();
  private allSettled: (() => void) | undefined;
  /** Channels whose consumer the broker cancelled, closed once no job in flight needs them. */
  private readonly retired = new Set<Channel>();
  private closing: Promise<void> | undefined;
  /** Aborts a wait for the connection when the source closes. */
  private readonly closed = new AbortController();
  /** Asks in a row, by an idle consumer, that found jobs waiting. */
  private waitingSeen = 0;
  /** Consumers in a row dropped as stalled, with no job delivered since. */
  private stalledInRow = 0;

  constructor(private readonly options: AmqpJobSourceOptions) {
    this.logger = options.logger.child({ processor: options.processorId });
    this.states = new ConfirmChannelSlot((signal) => options.jobs.connected(signal), this.logger, 'states');
    this.logs = new ConfirmChannelSlot((signal) => options.logs.connected(signal), this.logger, 'logs');
  }

  /**
   * Open the channel and start consuming; `openSource` awaits this so a bad
   * queue fails early. While the broker is away, or when it goes away
   * meanwhile, this returns, and `next()` waits for it: a processor opening
   * its source must not wait out an outage, or it could neither pause nor
   * stop until the broker is back.
   */
  async start(): Promise<void> {
    if (this.options.jobs.up) await this.ensureConsumer({ waitForBroker: false });
  }

  async next(signal: AbortSignal): Promise<QueuedJob | undefined> {
    for (;;) {
      if (this.closing || signal.aborted) return undefined;
      const ready = this.ready.shift();
      if (ready) return this.handOut(ready);
      let consumer: Consumer | undefined;
      try {
        consumer = await raceAbort(this.ensureConsumer(), signal);
      } catch (err) {
        if (this.closing || signal.aborted) return undefined;
        throw err;
      }
      // No consumer: `start`'s attempt, which does not wait for the broker, lost it; this call waits.
      if (this.ready.length > 0 || !consumer || consumer.gone) continue;
      if (!(await this.wake(signal, this.options.stallCheckMs))) await this.checkStalled(consumer);
    }
  }

  /** After `stallCheckMs` idle on `consumer`: drop it when jobs waited at this ask and the one before (see the header). */
  private async checkStalled(consumer: Consumer): Promise<void> {
    let waiting: number;
    try {
      waiting = await this.options.readyJobs();
    } catch {
      // The broker is away or the queue unreadable: the consumer's own channel says so.
      this.waitingSeen = 0;
      return;
    }
    if (consumer.gone || this.ready.length > 0) return;
    this.waitingSeen = waiting > 0 ? this.waitingSeen + 1 : 0;
    if (this.waitingSeen < 2) return;
    this.waitingSeen = 0;
    this.stalledInRow += 1;
    this.logger.warn(
      { ready_jobs: waiting, idle_ms: 2 * this.options.stallCheckMs, in_a_row: this.stalledInRow },
      'jobs wait in the queue but the broker delivers none to this idle consumer; consuming again on a fresh channel',
    );
    consumer.gone = true;
    await closeChannel(consumer.channel, this.logger, 'jobs');
    if (this.stalledInRow > 1) this.options.onStalled();
  }

  /** Jobs handed out and not yet settled. */
  get busy(): boolean {
    return this.inFlight.size > 0;
  }

  /**
   * Stop taking jobs (cancel the consumer), wait until the job in flight is
   * settled, then close the channels. Deliveries not yet handed out go back
   * to the queue. Waits as long as the job in flight runs.
   */
  close(): Promise<void> {
    this.closing ??= this.shutDown();
    return this.closing;
  }

  private async shutDown(): Promise<void> {
    this.closed.abort(new BrokerError('the job source is closed', 'closed'));
    this.wakeAll();
    const consumer = await this.starting?.catch(() => undefined) ?? this.consumer;
    if (consumer && !consumer.gone) {
      try {
        await consumer.channel.cancel(consumer.tag);
      } catch (err) {
        this.logger.debug({ err: errorMessage(err) }, 'cancelling the job consumer failed (channel gone)');
      }
    }
    for (const { message, consumer: from } of this.ready.splice(0)) nackQuietly(from, message, this.logger);
    if (this.inFlight.size > 0) {
      this.logger.info({ jobs: [...this.inFlight].map((job) => job.payload.jobId) }, 'job source closing after the job in flight');
      await new Promise<void>((resolve) => (this.allSettled = resolve));
    }
    this.closeRetired();
    if (consumer && !consumer.gone) await closeChannel(consumer.channel, this.logger, 'jobs');
    await Promise.all([this.states.close(), this.logs.close()]);
    this.options.onClosed();
  }

  private handOut({ message, payload, consumer }: Ready): QueuedJob {
    this.waitingSeen = 0;
    this.stalledInRow = 0;
    const job: AmqpQueuedJob = new AmqpQueuedJob({
      payload,
      message,
      channel: consumer.channel,
      states: this.states,
      logs: this.logs,
      sharding: this.options.sharding,
      deliveryTimeoutMs: this.options.deliveryTimeoutMs,
      reported: this.options.reported,
      logger: this.logger,
      onSettled: () => {
        this.inFlight.delete(job);
        this.closeRetired();
        if (this.inFlight.size === 0) this.allSettled?.();
      },
    });
    this.inFlight.add(job);
    this.logger.info({ job_id: payload.jobId, redelivered: message.fields.redelivered }, 'received amqp delivery');
    return job;
  }

  /** The consumer, started if there is none; see `startConsumer` for `waitForBroker`. */
  private ensureConsumer(how = { waitForBroker: true }): Promise<Consumer | undefined> {
    if (this.consumer && !this.consumer.gone) return Promise.resolve(this.consumer);
    this.starting ??= this.startConsumer(how.waitForBroker).finally(() => {
      this.starting = undefined;
    });
    return this.starting;
  }

  /**
   * A consumer on a fresh channel, once the connection is up. A failure
   * because the connection went down meanwhile waits for it to come back
   * (or, without `waitForBroker`, gives undefined); any other (the queue is
   * missing, access refused) is thrown.
   */
  private async startConsumer(waitForBroker: boolean): Promise<Consumer | undefined> {
    for (;;) {
      const connection = await this.options.jobs.connected(this.closed.signal);
      try {
        return await this.consumeOn(connection);
      } catch (err) {
        if (this.options.jobs.up || this.closed.signal.aborted) throw err;
        this.logger.info({ err: errorMessage(err) }, 'the broker went away while the job consumer started; waiting for it');
        if (!waitForBroker) return undefined;
      }
    }
  }

  private async consumeOn(connection: ChannelModel): Promise<Consumer> {
    const { queueName, consumerPriority } = this.options;
    let channel: Channel;
    try {
      channel = await connection.createChannel();
    } catch (err) {
      throw new BrokerError(`could not open a job channel: ${errorMessage(err)}`, 'closed', { cause: err });
    }
    const consumer: Consumer = { channel, tag: JOB_CONSUMER_TAG, gone: false };
    let closeError: unknown;
    channel.on('error', (err: Error) => {
      closeError = err;
      if (isConsumerTimeout(err)) {
        const jobs = [...this.inFlight].map((job) => job.payload.jobId);
        this.logger.error({ job_id: jobs[0], jobs, err: err.message }, CONSUMER_TIMEOUT_ADVICE);
      } else {
        this.logger.error({ err: err.message }, 'job channel error');
      }
    });
    channel.on('close', () => this.consumerGone(consumer, closeError));
    try {
      await channel.prefetch(1);
      await channel.consume(queueName, (message) => this.onDelivery(consumer, message), {
        consumerTag: JOB_CONSUMER_TAG,
        noAck: false,
        arguments: { 'x-priority': consumerPriority },
      });
    } catch (err) {
      await closeChannel(channel, this.logger, 'jobs');
      throw new BrokerError(`could not consume the job queue ${queueName}: ${errorMessage(err)}`, 'closed', { cause: err });
    }
    this.consumer = consumer;
    return consumer;
  }

  private onDelivery(consumer: Consumer, message: ConsumeMessage | null): void {
    if (message === null) {
      // basic.cancel from the broker: the queue was deleted, or its node went down.
      this.logger.error({ queue: this.options.queueName }, 'the broker cancelled the job consumer; consuming again');
      consumer.gone = true;
      // The job in flight can still be acknowledged on this channel: keep it open until that job is settled.
      this.retired.add(consumer.channel);
      this.closeRetired();
      this.wakeAll();
      return;
    }
    try {
      const parsed = parseJobPayload(message.content, this.options.payloadMaxBytes);
      if (parsed.kind === 'rejected') {
        this.reject(consumer, message, parsed.reason);
        return;
      }
      if (this.closing) {
        nackQuietly(consumer, message, this.logger);
        return;
      }
      if (message.fields.redelivered && this.settleReported(consumer, message, parsed.payload.jobId)) return;
      this.ready.push({ message, payload: parsed.payload, consumer });
      this.wakeAll();
    } catch (err) {
      // Never let one delivery take the consumer down; give it back for another try.
      this.logger.error({ err: errorMessage(err) }, 'handling a job delivery failed');
      nackQuietly(consumer, message, this.logger);
    }
  }

  /**
   * A redelivery of a job this worker already reported (its ack was lost
   * with the connection): acknowledge it without running it again. True
   * when it was settled so.
   */
  private settleReported(consumer: Consumer, message: ConsumeMessage, jobId: number): boolean {
    const state = this.options.reported.reportedState(jobId);
    if (state === undefined) return false;
    try {
      consumer.channel.ack(message);
    } catch (err) {
      this.logger.warn({ job_id: jobId, err: errorMessage(err) }, 'could not acknowledge a redelivery of a job already reported; it comes back');
      return true;
    }
    this.options.reported.forget(jobId);
    this.logger.info(
      { job_id: jobId, state },
      'acknowledged a redelivery of a job this worker had already reported, without running it again (the first acknowledgement was lost with the connection)',
    );
    return true;
  }

  /**
   * Not a job at all: drop it to the dead-letter route (nack, no requeue).
   * The reason goes to the worker log, never the content: any part of a
   * payload may hold secure env vars. With a dead-letter route, the message
   * itself waits there for whoever may read it.
   */
  private reject(consumer: Consumer, message: ConsumeMessage, reason: string): void {
    this.logger.error(
      { reason, bytes: message.content.byteLength, delivery_tag: message.fields.deliveryTag, redelivered: message.fields.redelivered },
      'rejected a job delivery that is not a job; dropped to the dead-letter route if the queue has one',
    );
    try {
      consumer.channel.nack(message, false, false);
    } catch (err) {
      this.logger.warn({ err: errorMessage(err) }, 'could not reject the delivery; the broker will redeliver it');
    }
  }

  private consumerGone(consumer: Consumer, cause: unknown): void {
    consumer.gone = true;
    this.ready = this.ready.filter((ready) => ready.consumer !== consumer);
    const timeout = isConsumerTimeout(cause);
    for (const job of [...this.inFlight]) {
      const reason = new BrokerError(
        timeout
          ? `job ${job.payload.jobId} was lost: ${CONSUMER_TIMEOUT_ADVICE}`
          : `job ${job.payload.jobId} was lost: its channel closed (${cause === undefined ? 'connection closed' : errorMessage(cause)}); the broker will redeliver it`,
        timeout ? 'consumer-timeout' : 'closed',
        { cause },
      );
      job.markLost(reason);
    }
    this.wakeAll();
  }

  private closeRetired(): void {
    const busy = new Set([...this.inFlight].map((job) => job.channel));
    for (const channel of this.retired) {
      if (busy.has(channel)) continue;
      this.retired.delete(channel);
      void closeChannel(channel, this.logger, 'retired jobs');
    }
  }

  /** Resolves true when woken (a delivery, a lost consumer, close) or `signal` aborts; false once `timeoutMs` passed without. */
  private wake(signal: AbortSignal, timeoutMs: number): Promise<boolean> {
    return new Promise<boolean>((resolve) => {
      const settle = (woken: boolean): void => {
        clearTimeout(timer);
        this.wakers.delete(done);
        signal.removeEventListener('abort', done);
        resolve(woken);
      };
      const done = (): void => settle(true);
      const timer = setTimeout(() => settle(false), timeoutMs);
      this.wakers.add(done);
      signal.addEventListener('abort', done, { once: true });
    });
  }

  private wakeAll(): void {
    for (const wake of [...this.wakers]) wake();
  }
}

function nackQuietly(consumer: Consumer, message: ConsumeMessage, logger: Logger): void {
  if (consumer.gone) return;
  try {
    consumer.channel.nack(message, false, true);
  } catch (err) {
    logger.debug({ err: errorMessage(err) }, 'nack failed; the channel is gone and the broker requeues the delivery itself');
  }
}
