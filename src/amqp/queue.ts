/**
 * The `amqp` job queue (PROTOCOL.md): a drop-in for travis-ci/worker's
 * AMQPJobQueue, AMQPCanceller and AMQP log writer.
 *
 * Connections: one for jobs, states and cancel commands (`config.uri`), and
 * one for log parts when `config.logsUri` is set (else the jobs one).
 * Connection loss is fatal for now: see `AmqpQueueOptions.onFatal`.
 */
import { hostname as osHostname } from 'node:os';
import type { Channel, ChannelModel } from 'amqplib';
import type { AmqpConfig } from '../config.js';
import { errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import type { CancelCommand, JobQueue, JobSource } from '../queue/contract.js';
import { consumeCommands } from './canceller.js';
import { openConnection, type BrokerConnection } from './connection.js';
import { declareJobObjects, declareLogObjects } from './declare.js';
import { BrokerError } from './errors.js';
import { AmqpJobSource } from './source.js';

export interface AmqpQueueOptions {
  config: AmqpConfig;
  /** `TRAVIS_WORKER_QUEUE_NAME`, e.g. `builds.gce`. */
  queueName: string;
  logger: Logger;
  /** Deliveries larger than this many bytes are rejected unread. */
  payloadMaxBytes: number;
  /** `TRAVIS_WORKER_INFRA`: fills `meta.infra` of a log part whose meta has none. */
  infra?: string;
  /** Shown in the broker's connection name; `os.hostname()` by default. */
  hostname?: string;
  /**
   * Called once when a connection (jobs or logs) closes without `close()`
   * having been called: the broker went away, or an operator closed the
   * connection. Every job in flight has had its `lost` signal aborted by
   * then (the broker redelivers them). Reconnecting is not implemented yet:
   * the composition root stops the worker (and its supervisor restarts it).
   * Without a listener the error is only logged.
   */
  onFatal?: (err: BrokerError) => void;
}

type QueueState = 'new' | 'opening' | 'open' | 'closing' | 'closed';

export class AmqpJobQueue implements JobQueue {
  readonly name = 'amqp';
  private state: QueueState = 'new';
  private jobs: BrokerConnection | undefined;
  private logs: BrokerConnection | undefined;
  private commands: Channel | undefined;
  private readonly cancelListeners: Array<(command: CancelCommand) => void> = [];
  private readonly sources = new Set<AmqpJobSource>();
  private fatal: BrokerError | undefined;
  private readonly logger: Logger;

  constructor(private readonly options: AmqpQueueOptions) {
    this.logger = options.logger.child({ queue: `amqp:${options.queueName}` });
  }

  async open(): Promise<void> {
    if (this.state !== 'new') throw new Error(`AmqpJobQueue.open() called when ${this.state}`);
    this.state = 'opening';
    const { config } = this.options;
    const connectionName = `mayfly ${this.options.hostname ?? osHostname()} ${process.pid}`;
    try {
      this.jobs = await openConnection({
        uri: config.uri,
        role: 'jobs',
        heartbeatMs: config.heartbeatMs,
        insecure: config.insecure,
        ...(config.tlsCert === undefined ? {} : { tlsCert: config.tlsCert }),
        connectionName,
        logger: this.logger,
        onLost: (err) => this.lost(err),
      });
      if (config.logsUri) {
        this.logs = await openConnection({
          uri: config.logsUri,
          role: 'logs',
          heartbeatMs: config.heartbeatMs,
          insecure: config.insecure,
          ...(config.logsTlsCert === undefined ? {} : { tlsCert: config.logsTlsCert }),
          connectionName: `${connectionName} logs`,
          logger: this.logger,
          onLost: (err) => this.lost(err),
        });
      }
      await declareJobObjects(this.jobs.model, this.options.queueName, this.logger);
      await declareLogObjects(this.logs ?? this.jobs, config.sharding, this.logger);
      // Like travis: a worker that can't hear cancel commands still runs jobs.
      await this.startCommands().catch((err: unknown) => {
        this.logger.error({ err: errorMessage(err) }, 'could not subscribe to cancel commands; cancels are ignored until restart');
      });
    } catch (err) {
      await this.closeConnections();
      this.state = 'closed';
      throw err;
    }
    this.state = 'open';
  }

  async openSource(processorId: string): Promise<JobSource> {
    if (this.state !== 'open') throw new Error(`AmqpJobQueue.openSource() called when ${this.state}`);
    if (this.fatal) throw this.fatal;
    const { config } = this.options;
    const source: AmqpJobSource = new AmqpJobSource({
      processorId,
      queueName: this.options.queueName,
      consumerPriority: config.consumerPriority,
      payloadMaxBytes: this.options.payloadMaxBytes,
      sharding: config.sharding,
      ...(this.options.infra === undefined ? {} : { infra: this.options.infra }),
      jobs: () => this.jobsModel(),
      logs: () => this.logsModel(),
      logger: this.logger,
      onClosed: () => this.sources.delete(source),
    });
    await source.start();
    this.sources.add(source);
    return source;
  }

  onCancel(listener: (command: CancelCommand) => void): void {
    this.cancelListeners.push(listener);
  }

  /**
   * Close the command channel and the connections. Sources still open are
   * not waited for: their unacknowledged jobs go back to the queue with
   * the connection. Idempotent; never throws.
   */
  async close(): Promise<void> {
    if (this.state === 'closing' || this.state === 'closed') return;
    this.state = 'closing';
    if (this.sources.size > 0) {
      this.logger.warn({ sources: this.sources.size }, 'closing the queue with job sources still open; their jobs go back to the queue');
    }
    const commands = this.commands;
    this.commands = undefined;
    await commands?.close().catch((err: unknown) => this.logger.debug({ err: errorMessage(err) }, 'closing the command channel failed'));
    await this.closeConnections();
    this.state = 'closed';
  }

  private jobsModel(): ChannelModel {
    if (!this.jobs) throw new BrokerError('the amqp queue is not open', 'closed');
    return this.jobs.model;
  }

  private logsModel(): ChannelModel {
    return this.logs?.model ?? this.jobsModel();
  }

  private async closeConnections(): Promise<void> {
    await this.logs?.close();
    await this.jobs?.close();
  }

  private async startCommands(): Promise<void> {
    const channel = await consumeCommands({
      connection: this.jobsModel(),
      logger: this.logger,
      dispatch: (command) => this.dispatch(command),
    });
    this.commands = channel;
    channel.on('close', () => {
      if (this.commands !== channel) return;
      this.commands = undefined;
      // Closed by the broker while the connection lives: subscribe again, once per close.
      if (this.state !== 'open' || !this.jobs || this.jobs.closed) return;
      this.logger.warn('the cancel command channel closed; subscribing again');
      this.startCommands().catch((err: unknown) => {
        this.logger.error({ err: errorMessage(err) }, 'could not subscribe to cancel commands again; cancels are ignored until restart');
      });
    });
  }

  private dispatch(command: CancelCommand): void {
    for (const listener of this.cancelListeners) {
      try {
        listener(command);
      } catch (err) {
        this.logger.error({ job_id: command.jobId, err: errorMessage(err) }, 'a cancel listener threw');
      }
    }
  }

  private lost(err: BrokerError): void {
    if (this.fatal) return;
    this.fatal = err;
    if (this.state === 'opening') return; // open() fails on its own
    if (this.options.onFatal) {
      try {
        this.options.onFatal(err);
      } catch (listenerErr) {
        this.logger.error({ err: errorMessage(listenerErr) }, 'the onFatal listener threw');
      }
    }
  }
}
