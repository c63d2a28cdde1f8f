/**
 * One AMQP connection with its events always handled: amqplib emits
 * 'error' on connections, and an unhandled 'error' event would crash the
 * worker. An unexpected close is reported once through `onLost`.
 */
import { Socket } from 'node:net';
import { connect, type ChannelModel, type SocketOptions } from 'amqplib';
import { maskUrl } from '../../redact.js';
import { errorMessage } from '../../errors.js';
import type { Logger } from '../../logger.js';
import { BrokerError } from './errors.js';
import { connectTarget, type ConnectSettings } from './uri.js';

export interface BrokerConnection {
  readonly model: ChannelModel;
  /** The node connected to: its URI with the password masked. */
  readonly node: string;
  /** True once the connection closed, expectedly or not. */
  readonly closed: boolean;
  /**
   * The last error the connection reported. Some refusals close the whole
   * connection (e.g. 503 COMMAND_INVALID for an unknown exchange type), and
   * the call that caused them only sees "channel ended".
   */
  readonly lastError: unknown;
  /** True when the socket's writes of one tick leave in one writev(2) (`coalesceWrites`); false if amqplib's internals moved. */
  readonly writesCoalesced: boolean;
  /** Close cleanly; an unexpected close is no longer reported afterwards. Never throws. */
  close(): Promise<void>;
}

export interface OpenConnectionOptions extends ConnectSettings {
  uri: string;
  /** `jobs` or `logs`, for log lines. */
  role: string;
  logger: Logger;
  /** Called once if the connection closes without `close()` having been called. */
  onLost: (err: BrokerError) => void;
}

export async function openConnection(options: OpenConnectionOptions): Promise<BrokerConnection> {
  const { uri, role, logger } = options;
  const masked = maskUrl(uri);
  const target = connectTarget(uri, options);
  let model: ChannelModel;
  try {
    model = await connect(target.url, { ...target.socketOptions, ...WRITE_BUFFER_OPTIONS });
  } catch (err) {
    // amqplib's messages may quote the URI; say which broker with the password masked.
    throw new BrokerError(`could not connect to the ${role} broker at ${masked}: ${errorMessage(err)}`, 'closed', { cause: err });
  }
  const writesCoalesced = coalesceWrites(model);
  if (!writesCoalesced) logger.warn({ broker: role }, 'amqplib keeps its socket elsewhere: AMQP writes are not coalesced (more CPU per log part)');
  let closing = false;
  let closed = false;
  let lastError: unknown;

  model.on('error', (err: Error) => {
    lastError = err;
    logger.error({ broker: role, err: err.message }, 'AMQP connection error');
  });
  model.on('blocked', (reason: string) => {
    logger.warn({ broker: role, reason }, 'the broker blocked publishing (a memory or disk alarm); publishes wait until it unblocks');
  });
  model.on('unblocked', () => logger.info({ broker: role }, 'the broker unblocked publishing'));
  model.on('close', (err?: Error) => {
    closed = true;
    if (closing) return;
    const cause = err ?? lastError;
    const detail = cause === undefined ? 'closed by the broker' : errorMessage(cause);
    logger.error({ broker: role, uri: masked, err: detail }, 'AMQP connection closed unexpectedly');
    options.onLost(new BrokerError(`the connection to the ${role} broker closed: ${detail}`, 'closed', { cause }));
  });
  logger.info({ broker: role, uri: masked }, 'connected to the broker');

  return {
    model,
    node: masked,
    get closed() {
      return closed;
    },
    get lastError() {
      return lastError;
    },
    writesCoalesced,
    async close() {
      if (closing || closed) return;
      closing = true;
      try {
        await model.close();
      } catch (err) {
        logger.warn({ broker: role, err: errorMessage(err) }, 'closing the AMQP connection failed');
      }
    },
  };
}

/**
 * Bytes the socket buffers while corked (see `coalesceWrites`) before
 * `write` says "full". Node's 16 KiB default would cut a tick's batch after
 * about nine 1.8 kB log parts and make amqplib's muxer wait for 'drain'.
 * 256 KiB holds a whole window of log parts of a few jobs
 * (LOG_PUBLISH_WINDOW × ~1.8 kB ≈ 115 kB per job).
 */
const SOCKET_WRITE_HIGH_WATER_MARK_BYTES = 256 * 1024;
const WRITE_BUFFER_OPTIONS = { writableHighWaterMark: SOCKET_WRITE_HIGH_WATER_MARK_BYTES } as SocketOptions;

/**
 * amqplib writes each message to the socket on its own: one write(2) per
 * log part, measured at a third of the worker's busy CPU while a job
 * streams its log (`npm run bench`). Cork the socket on the first write of a tick
 * and uncork it on the next microtask turn, so everything amqplib's muxer
 * writes in one pass leaves in one writev(2). Nothing waits longer: the
 * bytes go out before the event loop moves on. Returns false (and changes
 * nothing) if the connection's socket is not where amqplib 2 keeps it.
 */
function coalesceWrites(model: ChannelModel): boolean {
  const stream = (model.connection as { stream?: unknown }).stream;
  if (!(stream instanceof Socket)) return false;
  const write = stream.write;
  let corked = false;
  const uncork = (): void => {
    corked = false;
    stream.uncork();
  };
  stream.write = function (this: Socket, ...args: Parameters<Socket['write']>): boolean {
    if (!corked && !this.destroyed) {
      corked = true;
      this.cork();
      process.nextTick(uncork);
    }
    return (write as (...a: Parameters<Socket['write']>) => boolean).apply(this, args);
  } as Socket['write'];
  return true;
}
