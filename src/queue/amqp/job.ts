/**
 * One delivery of one job on AMQP: its state updates (confirmed before the
 * call resolves), its log sink, and its acknowledgement on the channel it
 * was delivered on.
 */
import { randomUUID } from 'node:crypto';
import type { Channel, ConsumeMessage } from 'amqplib';
import { errorMessage } from '../../errors.js';
import type { JobPayload } from '../../job/payload.js';
import type { Logger } from '../../logger.js';
import type { JobState, QueuedJob, TerminalState } from '../contract.js';
import { republishPauses, type ConfirmPublisher } from './confirm-channel.js';
import type { ReportedJobs } from './reported-jobs.js';
import { abortableSleep, raceAbort } from '../../util/abort.js';
import { BrokerError } from './errors.js';
import { AmqpLogSink } from './log-sink.js';
import { STATE_EVENT, STATE_QUEUE, publishOptions, stateUpdateBody } from './messages.js';

export interface AmqpQueuedJobOptions {
  payload: JobPayload;
  message: ConsumeMessage;
  /** The channel the job was delivered on: the only one that can acknowledge it. */
  channel: Channel;
  /** Confirm channel on the jobs connection, for state updates. */
  states: ConfirmPublisher;
  /** Confirm channel on the logs connection, for log parts. */
  logs: ConfirmPublisher;
  sharding: boolean;
  /** How long a log part or state update may go unconfirmed, retries included (`TRAVIS_WORKER_LOG_DELIVERY_TIMEOUT`). */
  deliveryTimeoutMs: number;
  /** Where a confirmed final report is remembered until the delivery is acknowledged. */
  reported: ReportedJobs;
  logger: Logger;
  /** Called once when the delivery is settled (acked, nacked) or lost. */
  onSettled: () => void;
}

/** Where a delivery is in its life; each step happens at most once, in this order. */
type Phase = 'delivered' | 'received' | 'started' | 'reported' | 'settled';

export class AmqpQueuedJob implements QueuedJob {
  readonly payload: JobPayload;
  readonly log: AmqpLogSink;
  /** The payload's uuid, else one made up once for this delivery (travis does the same). */
  readonly uuid: string;
  private readonly lostController = new AbortController();
  private phase: Phase = 'delivered';
  private count: number;
  private instanceId: string | undefined;
  /** The payload's `vm_size`, until the backend says what it became (travis echoes its rewritten value). */
  private vmSize: string | undefined;
  private receivedAt: Date | undefined;
  private startedAt: Date | undefined;
  private finishedAt: Date | undefined;
  private readonly logger: Logger;

  constructor(private readonly options: AmqpQueuedJobOptions) {
    this.payload = options.payload;
    this.uuid = options.payload.uuid ?? randomUUID();
    this.count = options.payload.stateUpdateCount;
    this.vmSize = options.payload.vmSize;
    this.logger = options.logger.child({ job_id: options.payload.jobId });
    this.log = new AmqpLogSink({
      publisher: options.logs,
      jobId: options.payload.jobId,
      uuid: this.uuid,
      sharding: options.sharding,
      deliveryTimeoutMs: options.deliveryTimeoutMs,
      lost: this.lostController.signal,
      logger: this.logger,
    });
  }

  /** The channel the job was delivered on. */
  get channel(): Channel {
    return this.options.channel;
  }

  get lost(): AbortSignal {
    return this.lostController.signal;
  }

  /** True until the delivery is acknowledged, given back, or lost. */
  get inFlight(): boolean {
    return this.phase !== 'settled';
  }

  async received(): Promise<void> {
    this.advance('received', ['delivered']);
    this.receivedAt = new Date();
    await this.publishState('received');
  }

  async started(instanceId: string, vmSize?: string): Promise<void> {
    this.advance('started', ['delivered', 'received']);
    this.startedAt = new Date();
    this.instanceId = instanceId;
    this.vmSize = vmSize ?? this.vmSize;
    await this.publishState('started');
  }

  async finish(state: TerminalState): Promise<void> {
    this.advance('reported', ['delivered', 'received', 'started']);
    const now = new Date();
    this.finishedAt = now;
    // As travis: a job that never got that far reports the finish time for both.
    this.receivedAt ??= now;
    this.startedAt ??= now;
    await this.publishTerminal(state);
  }

  async requeue(): Promise<void> {
    this.advance('reported', ['delivered', 'received', 'started']);
    await this.publishTerminal('reset');
  }

  async acknowledge(): Promise<void> {
    if (this.lost.aborted) throw this.lost.reason;
    if (this.phase === 'settled') return;
    try {
      this.options.channel.ack(this.options.message);
      this.options.reported.forget(this.payload.jobId);
    } catch (err) {
      this.settle();
      throw new BrokerError(
        `could not acknowledge job ${this.payload.jobId}: ${errorMessage(err)}; the broker will redeliver it`,
        'closed',
        { cause: err },
      );
    }
    this.settle();
  }

  /** The source's channel closed before the delivery was settled: the broker will redeliver the job. */
  markLost(reason: BrokerError): void {
    if (this.phase === 'settled') return;
    this.settle();
    this.lostController.abort(reason);
  }

  /**
   * Give the delivery back to the queue unacknowledged (the worker is stopping
   * or can't report it). Never throws: a dead channel gives it back anyway.
   */
  giveBack(): void {
    if (this.phase === 'settled') return;
    try {
      this.options.channel.nack(this.options.message, false, true);
    } catch (err) {
      this.logger.debug({ err: errorMessage(err) }, 'nack failed; the channel is gone and the broker requeues the job itself');
    }
    this.settle();
  }

  private settle(): void {
    this.phase = 'settled';
    this.options.onSettled();
  }

  private advance(to: Phase, from: Phase[]): void {
    if (this.lost.aborted) throw this.lost.reason;
    if (!from.includes(this.phase)) {
      throw new BrokerError(`job ${this.payload.jobId}: cannot report ${to} after ${this.phase}`, 'settled');
    }
    this.phase = to;
  }

  /**
   * The terminal state or `reset`. If it can't be published, the delivery is
   * given back (nack, requeue) right away: otherwise it would sit
   * unacknowledged on a live channel and, with prefetch 1, block this
   * processor until the channel closes.
   */
  private async publishTerminal(state: TerminalState | 'reset'): Promise<void> {
    try {
      await this.publishState(state);
    } catch (err) {
      this.logger.error({ state, err: errorMessage(err) }, 'could not publish the final state; giving the job back to the queue');
      this.giveBack();
      throw err;
    }
    this.options.reported.record(this.payload.jobId, state);
  }

  private async publishState(state: JobState): Promise<void> {
    const count = this.count++;
    const body = stateUpdateBody({
      jobId: this.payload.jobId,
      state,
      count,
      uuid: this.uuid,
      trace: this.payload.trace,
      ...(this.instanceId === undefined ? {} : { instanceId: this.instanceId }),
      ...(this.vmSize === undefined ? {} : { vmSize: this.vmSize }),
      ...(this.payload.queuedAt === undefined ? {} : { queuedAt: this.payload.queuedAt }),
      ...(this.receivedAt === undefined ? {} : { receivedAt: this.receivedAt }),
      ...(this.startedAt === undefined ? {} : { startedAt: this.startedAt }),
      ...(this.finishedAt === undefined ? {} : { finishedAt: this.finishedAt }),
    });
    await this.publishConfirmed(state, count, body);
    this.logger.debug({ state, state_update_count: count }, 'state update confirmed');
  }

  /**
   * Publish a state update until the broker confirms it: a channel that died
   * (or a nack) gets the same message again, same `state_update_count`, so
   * a consumer can drop a duplicate. Gives up when the delivery is lost (the
   * run is void then) or after the delivery timeout.
   */
  private async publishConfirmed(state: JobState, count: number, body: Buffer): Promise<void> {
    const deadline = Date.now() + this.options.deliveryTimeoutMs;
    for (const pause of republishPauses()) {
      try {
        const result = await this.options.states.publish('', STATE_QUEUE, body, publishOptions(STATE_EVENT[state]), this.lost);
        await raceAbort(result.confirmed, this.lost);
        return;
      } catch (err) {
        if (this.lost.aborted) throw this.lost.reason;
        if (Date.now() + pause > deadline) throw err;
        this.logger.warn({ state, state_update_count: count, err: errorMessage(err) }, 'state update not confirmed; publishing it again');
      }
      await abortableSleep(pause, this.lost).catch(() => undefined);
    }
  }
}
