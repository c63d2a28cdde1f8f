/**
 * A broker connection that comes back: when it closes without `close()`
 * having been called (the broker restarted, a network cut, a missed
 * heartbeat), it is opened again with growing, jittered delays until the
 * broker answers, and the broker objects are declared again before anyone
 * is told it is back. travis-ci/worker exits instead and leaves the
 * restart to its supervisor, which drops every running job at once.
 *
 * Who uses the connection waits for it (`connected`) rather than failing
 * while it is down; who must react to the loss (the deliveries of the lost
 * connection are void) listens to `lost`.
 */
import { EventEmitter } from 'node:events';
import type { ChannelModel } from 'amqplib';
import pRetry, { AbortError } from 'p-retry';
import { errorMessage } from '../../errors.js';
import type { Logger } from '../../logger.js';
import { raceAbort } from '../../util/abort.js';
import type { BrokerConnection } from './connection.js';
import { BrokerError } from './errors.js';

export interface ReconnectBackoff {
  /** The first delay before connecting again, in ms; each further attempt doubles it, with jitter. */
  initialMs: number;
  /** The longest delay between attempts, in ms. */
  maxMs: number;
}

export interface ReconnectingConnectionOptions {
  /** `jobs` or `logs`, for log lines and errors. */
  role: string;
  /** Open one connection; it must call `onLost` once if it closes unexpectedly. */
  connect: (onLost: (err: BrokerError) => void) => Promise<BrokerConnection>;
  /** Run on every new connection before it is handed out: declare what the worker needs. */
  prepare: (connection: BrokerConnection) => Promise<void>;
  backoff: ReconnectBackoff;
  logger: Logger;
}

export interface ReconnectingConnectionEvents {
  /** The connection closed unexpectedly; a new one is being opened. */
  lost: [BrokerError];
  /** A new connection is open and prepared. */
  restored: [ChannelModel];
}

type State = 'new' | 'up' | 'down' | 'closed';

export class ReconnectingConnection extends EventEmitter<ReconnectingConnectionEvents> {
  private state: State = 'new';
  private connection: BrokerConnection | undefined;
  /** Why the connection is down, while it is. */
  private downReason: BrokerError | undefined;
  /** Woken when the connection is back, or closed for good. */
  private waiters = new Set<() => void>();
  /** Aborts the reconnect loop on `close()`. */
  private readonly closing = new AbortController();
  private reconnecting: Promise<void> | undefined;

  constructor(private readonly options: ReconnectingConnectionOptions) {
    super();
  }

  /** Open the first connection. Fails (without retrying) if the broker can't be reached: a misconfigured worker should say so at once. */
  async start(): Promise<void> {
    if (this.state !== 'new') throw new Error(`ReconnectingConnection.start() called when ${this.state}`);
    const connection = await this.openLive();
    if (this.state !== 'new') {
      await connection.close();
      return;
    }
    this.connection = connection;
    this.state = 'up';
  }

  get up(): boolean {
    return this.state === 'up';
  }

  /** The node in use (its URI, password masked), while the connection is up. */
  get node(): string | undefined {
    return this.state === 'up' ? this.connection?.node : undefined;
  }

  /** Why the connection is not usable now, or undefined when it is. */
  get unavailable(): string | undefined {
    switch (this.state) {
      case 'up':
        return undefined;
      case 'down':
        return `reconnecting to the ${this.options.role} broker: ${this.downReason?.message ?? 'connection lost'}`;
      default:
        return `the ${this.options.role} broker connection is ${this.state === 'new' ? 'not open yet' : 'closed'}`;
    }
  }

  /** The connection now; throws BrokerError while it is down. */
  model(): ChannelModel {
    if (this.state === 'up' && this.connection) return this.connection.model;
    throw new BrokerError(this.unavailable ?? `the ${this.options.role} broker connection is down`, 'closed');
  }

  /** The connection, once it is up; rejects when `signal` aborts or the connection is closed for good. */
  async connected(signal?: AbortSignal): Promise<ChannelModel> {
    for (;;) {
      signal?.throwIfAborted();
      if (this.state === 'up' && this.connection) return this.connection.model;
      if (this.state === 'closed' || this.state === 'new') return this.model();
      let wake!: () => void;
      const woken = new Promise<void>((resolve) => (wake = resolve));
      this.waiters.add(wake);
      try {
        await (signal ? raceAbort(woken, signal) : woken);
      } finally {
        this.waiters.delete(wake);
      }
    }
  }

  /**
   * Leave the node in use for the next one that answers, as after a loss
   * (everyone on the connection hears `lost`): for a node that keeps the
   * connection but cannot serve what it is asked. Does nothing unless up.
   */
  async moveOn(reason: string): Promise<void> {
    const connection = this.connection;
    if (this.state !== 'up' || !connection) return;
    this.lost(connection, new BrokerError(reason, 'closed'));
    await connection.close();
  }

  /** Close for good: stop reconnecting and close the connection. Never throws. */
  async close(): Promise<void> {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.closing.abort();
    this.wakeAll();
    const connection = this.connection;
    this.connection = undefined;
    await connection?.close();
    await this.reconnecting;
  }

  private async open(): Promise<BrokerConnection> {
    // `connect` reports a loss only after it resolved, so `connection` is set by then.
    const connection: BrokerConnection = await this.options.connect((err) => this.lost(connection, err));
    try {
      await this.options.prepare(connection);
    } catch (err) {
      await connection.close();
      throw err;
    }
    return connection;
  }

  /** One reconnect attempt. */
  private async attempt(): Promise<BrokerConnection> {
    let opened: BrokerConnection;
    try {
      opened = await this.openLive();
    } catch (err) {
      // p-retry ends its retries for good on a TypeError (it takes one for a bug of its caller's), even `forever`:
      // whatever a half-made connection throws must not leave the worker without a broker until it restarts.
      if (err instanceof TypeError) throw new BrokerError(`the ${this.options.role} broker connection failed: ${err.message}`, 'closed', { cause: err });
      throw err;
    }
    // Closed while this attempt was under way: p-retry has given up on it, so close what it opened.
    if (this.state === 'closed') {
      await opened.close();
      throw new AbortError('the connection was closed while reconnecting');
    }
    return opened;
  }

  /** `open`, failing when the connection closed again before it could be handed out (its loss went unheard). */
  private async openLive(): Promise<BrokerConnection> {
    const connection = await this.open();
    if (!connection.closed) return connection;
    throw new BrokerError(`the ${this.options.role} broker closed the connection right after it opened`, 'closed');
  }

  private lost(connection: BrokerConnection, err: BrokerError): void {
    // A connection that died while being prepared fails its own open(); one replaced already is old news.
    if (connection !== this.connection || this.state !== 'up') return;
    this.connection = undefined;
    this.state = 'down';
    this.downReason = err;
    this.options.logger.warn({ broker: this.options.role, err: err.message }, 'lost the broker connection; reconnecting');
    this.emit('lost', err);
    this.reconnecting = this.reconnect().finally(() => {
      this.reconnecting = undefined;
    });
  }

  private async reconnect(): Promise<void> {
    const { backoff, logger, role } = this.options;
    const startedAt = Date.now();
    let connection: BrokerConnection;
    try {
      connection = await pRetry(() => this.attempt(), {
        forever: true,
        minTimeout: backoff.initialMs,
        maxTimeout: backoff.maxMs,
        factor: 2,
        randomize: true,
        signal: this.closing.signal,
        onFailedAttempt: (err) => {
          logger.warn({ broker: role, attempt: err.attemptNumber, err: errorMessage(err) }, 'could not reconnect to the broker; trying again');
        },
      });
    } catch (err) {
      if (this.state !== 'closed') logger.error({ broker: role, err: errorMessage(err) }, 'gave up reconnecting to the broker');
      return;
    }
    if (this.state !== 'down') {
      await connection.close();
      return;
    }
    this.connection = connection;
    this.state = 'up';
    this.downReason = undefined;
    logger.info({ broker: role, uri: connection.node, down_ms: Date.now() - startedAt }, 'reconnected to the broker');
    this.wakeAll();
    this.emit('restored', connection.model);
  }

  private wakeAll(): void {
    for (const wake of [...this.waiters]) wake();
  }
}

/** What channel users need of a reconnecting connection. */
export type BrokerLink = Pick<ReconnectingConnection, 'up' | 'connected'>;
