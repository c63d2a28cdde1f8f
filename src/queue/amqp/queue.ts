/**
 * The `amqp` job queue (docs/protocol.md): a drop-in for travis-ci/worker's
 * AMQPJobQueue, AMQPCanceller and AMQP log writer.
 *
 * Connections: one for jobs, states and cancel commands (`config.uri`), and
 * one for log parts when `config.logsUri` is set (else the jobs one). Each
 * reconnects on its own when lost (src/queue/amqp/reconnecting.ts): the jobs in
 * flight on a lost jobs connection are lost (their `lost` signal aborts;
 * the broker hands them out again), the processors wait for the broker
 * and consume again, and `notReadyReason` says why meanwhile.
 */
import { hostname as osHostname } from 'node:os';
import type { Channel } from 'amqplib';
import type { AmqpConfig } from '../../config/types.js';
import { errorMessage, type BrokerError } from '../../errors.js';
import type { Logger } from '../../logger.js';
import type { CancelCommand, JobQueue, JobSource } from '../contract.js';
import { consumeCommands } from './canceller.js';
import { listedUrls } from '../../config/leaves.js';
import { openConnection } from './connection.js';
import { BrokerNodes } from './nodes.js';
import { declareJobObjects, declareLogObjects, type QueueKind } from './declare.js';
import { ReconnectingConnection } from './reconnecting.js';
import { ReadyJobsCounter } from './ready-jobs.js';
import { ReportedJobs } from './reported-jobs.js';
import { AmqpJobSource } from './source.js';
import { closeChannel } from './close-channel.js';

export interface AmqpQueueOptions {
  config: AmqpConfig;
  /** `TRAVIS_WORKER_QUEUE_NAME`, e.g. `builds.gce`. */
  queueName: string;
  logger: Logger;
  /** Deliveries larger than this many bytes are rejected unread. */
  payloadMaxBytes: number;
  /** Shown in the broker's connection name; `os.hostname()` by default. */
  hostname?: string;
  /** How often an idle consumer asks whether jobs wait that it is not given (see `AmqpJobSource`); 30 s by default. */
  stallCheckMs?: number;
}

/** An idle consumer asks this often whether jobs wait in the queue that the broker does not deliver to it. */
const STALL_CHECK_MS = 30_000;

type QueueState = 'new' | 'opening' | 'open' | 'closing' | 'closed';

export class AmqpJobQueue implements JobQueue {
  readonly name = 'amqp';
  private state: QueueState = 'new';
  private jobs: ReconnectingConnection | undefined;
  private logs: ReconnectingConnection | undefined;
  private commands: Channel | undefined;
  private readyCounter: ReadyJobsCounter | undefined;
  private readonly cancelListeners: Array<(command: CancelCommand) => void> = [];
  private readonly sources = new Set<AmqpJobSource>();
  private readonly reported = new ReportedJobs();
  /** The last ready count asked for the stall checks, and when. */
  private stallCount: { at: number; count: Promise<number> } | undefined;
  private readonly readinessListeners: Array<(notReadyReason: string | undefined) => void> = [];
  /** Whether listeners last heard "ready", so they hear each change once. */
  private toldReady = true;
  private readonly logger: Logger;
  private readonly stallCheckMs: number;

  constructor(private readonly options: AmqpQueueOptions) {
    this.logger = options.logger.child({ queue: `amqp:${options.queueName}` });
    this.stallCheckMs = options.stallCheckMs ?? STALL_CHECK_MS;
  }

  async open(): Promise<void> {
    if (this.state !== 'new') throw new Error(`AmqpJobQueue.open() called when ${this.state}`);
    this.state = 'opening';
    const { config, queueName } = this.options;
    const connectionName = `mayfly ${this.options.hostname ?? osHostname()} ${process.pid}`;
    const connect = (role: 'jobs' | 'logs', uris: string, tlsCert: string | undefined) => {
      const nodes = new BrokerNodes(listedUrls(uris));
      return (onLost: (err: BrokerError) => void) =>
        nodes.connect((uri) =>
          openConnection({
            uri,
            role,
            heartbeatMs: config.heartbeatMs,
            insecure: config.insecure,
            ...(tlsCert === undefined ? {} : { tlsCert }),
            connectionName: role === 'jobs' ? connectionName : `${connectionName} logs`,
            logger: this.logger,
            onLost,
          }),
        );
    };
    const kind: QueueKind = { type: config.queueType, deliveryLimit: config.deliveryLimit };
    const separateLogs = config.logsUri !== undefined && config.logsUri !== '';
    const jobs = new ReconnectingConnection({
      role: 'jobs',
      connect: connect('jobs', config.uri, config.tlsCert),
      prepare: async (connection) => {
        await declareJobObjects(connection.model, queueName, kind, this.logger);
        if (!separateLogs) await declareLogObjects(connection, config.sharding, kind, this.logger);
      },
      backoff: config.reconnect,
      logger: this.logger,
    });
    this.jobs = jobs;
    this.readyCounter = new ReadyJobsCounter(jobs, queueName, this.logger);
    if (separateLogs) {
      this.logs = new ReconnectingConnection({
        role: 'logs',
        connect: connect('logs', config.logsUri as string, config.logsTlsCert),
        prepare: (connection) => declareLogObjects(connection, config.sharding, kind, this.logger),
        backoff: config.reconnect,
        logger: this.logger,
      });
    }
    try {
      await jobs.start();
      await this.logs?.start();
      // Like travis: a worker that can't hear cancel commands still runs jobs.
      await this.subscribeCommands();
    } catch (err) {
      await this.closeConnections();
      this.state = 'closed';
      throw err;
    }
    jobs.on('restored', () => void this.subscribeCommands());
    for (const connection of [jobs, this.logs]) {
      connection?.on('lost', () => this.readinessChanged());
      connection?.on('restored', () => this.readinessChanged());
    }
    this.state = 'open';
  }

  async openSource(processorId: string): Promise<JobSource> {
    if (this.state !== 'open' || !this.jobs) throw new Error(`AmqpJobQueue.openSource() called when ${this.state}`);
    const { config } = this.options;
    const source: AmqpJobSource = new AmqpJobSource({
      processorId,
      queueName: this.options.queueName,
      consumerPriority: config.consumerPriority,
      payloadMaxBytes: this.options.payloadMaxBytes,
      sharding: config.sharding,
      deliveryTimeoutMs: config.logDeliveryTimeoutMs,
      reported: this.reported,
      jobs: this.jobs,
      logs: this.logs ?? this.jobs,
      readyJobs: () => this.readyJobsForStallChecks(),
      stallCheckMs: this.stallCheckMs,
      onStalled: () => void this.moveOnFromStalledNode(),
      logger: this.logger,
      onClosed: () => this.sources.delete(source),
    });
    await source.start();
    this.sources.add(source);
    return source;
  }

  /**
   * The ready count for the sources' stall checks, asked of the broker at
   * most twice per check period however many processors wait: a fleet of
   * hosts with hundreds of idle processors each would otherwise send the
   * broker a passive declare per processor every period.
   */
  private readyJobsForStallChecks(): Promise<number> {
    const now = Date.now();
    if (this.stallCount === undefined || now - this.stallCount.at >= this.stallCheckMs / 2) {
      this.stallCount = { at: now, count: this.readyJobs() };
    }
    return this.stallCount.count;
  }

  /**
   * A processor's fresh consumer stalled as its last one did: the node
   * keeps consumers it does not deliver to. Move the jobs connection to
   * another node, but only while no job runs on it: a move ends their runs.
   */
  private async moveOnFromStalledNode(): Promise<void> {
    if ([...this.sources].some((source) => source.busy)) {
      this.logger.warn('consumers on this broker node get no jobs; staying while jobs run on it');
      return;
    }
    await this.jobs?.moveOn('consumers on this broker node got no jobs while jobs waited: moving to another node');
  }

  /** Why jobs can't flow now (a broker connection is down and reconnecting), or undefined when they can. */
  notReadyReason(): string | undefined {
    if (this.state !== 'open') return `the amqp queue is ${this.state}`;
    return this.jobs?.unavailable ?? this.logs?.unavailable;
  }

  brokerNodes(): Record<string, string> {
    const nodes: Record<string, string> = {};
    if (this.jobs?.node !== undefined) nodes['jobs'] = this.jobs.node;
    if (this.logs?.node !== undefined) nodes['logs'] = this.logs.node;
    return nodes;
  }

  onReadinessChange(listener: (notReadyReason: string | undefined) => void): void {
    this.readinessListeners.push(listener);
  }

  onCancel(listener: (command: CancelCommand) => void): void {
    this.cancelListeners.push(listener);
  }

  readyJobs(): Promise<number> {
    if (this.state !== 'open' || !this.readyCounter) return Promise.reject(new Error(`the amqp queue is ${this.state}`));
    return this.readyCounter.count();
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
    if (commands) await closeChannel(commands, this.logger, 'commands');
    await this.readyCounter?.close();
    await this.closeConnections();
    this.state = 'closed';
  }

  private async closeConnections(): Promise<void> {
    await this.logs?.close();
    await this.jobs?.close();
  }

  /** Subscribe to cancel commands (again, after a reconnect); a failure is logged, not thrown. */
  private async subscribeCommands(): Promise<void> {
    await this.startCommands().catch((err: unknown) => {
      this.logger.error({ err: errorMessage(err) }, 'could not subscribe to cancel commands; cancels are ignored until the next reconnect or restart');
    });
  }

  private async startCommands(): Promise<void> {
    if (!this.jobs) return;
    const channel = await consumeCommands({
      connection: this.jobs.model(),
      logger: this.logger,
      dispatch: (command) => this.dispatch(command),
    });
    this.commands = channel;
    channel.on('close', () => {
      if (this.commands !== channel) return;
      this.commands = undefined;
      // Closed by the broker while the connection lives: subscribe again, once per close.
      // A lost connection closes its channels before it reports itself lost: look on the
      // next turn, and leave it to the reconnect if the connection is gone.
      setImmediate(() => {
        if (this.state !== 'open' || !this.jobs?.up) return;
        this.logger.warn('the cancel command channel closed; subscribing again');
        void this.subscribeCommands();
      });
    });
  }

  private readinessChanged(): void {
    const reason = this.notReadyReason();
    if ((reason === undefined) === this.toldReady) return;
    this.toldReady = reason === undefined;
    for (const listener of this.readinessListeners) {
      try {
        listener(reason);
      } catch (err) {
        this.logger.error({ err: errorMessage(err) }, 'a readiness listener threw');
      }
    }
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
}
