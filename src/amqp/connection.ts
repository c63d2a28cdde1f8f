/**
 * One AMQP connection with its events always handled: amqplib emits
 * 'error' on connections, and an unhandled 'error' event would crash the
 * worker. An unexpected close is reported once through `onLost`.
 */
import { connect, type ChannelModel } from 'amqplib';
import { maskUrl } from '../config.js';
import { errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import { BrokerError } from './errors.js';
import { connectTarget, type ConnectSettings } from './uri.js';

export interface BrokerConnection {
  readonly model: ChannelModel;
  /** True once the connection closed, expectedly or not. */
  readonly closed: boolean;
  /**
   * The last error the connection reported. Some refusals close the whole
   * connection (e.g. 503 COMMAND_INVALID for an unknown exchange type), and
   * the call that caused them only sees "channel ended".
   */
  readonly lastError: unknown;
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
    model = await connect(target.url, target.socketOptions);
  } catch (err) {
    // amqplib's messages may quote the URI; say which broker with the password masked.
    throw new BrokerError(`could not connect to the ${role} broker at ${masked}: ${errorMessage(err)}`, 'closed', { cause: err });
  }
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
    get closed() {
      return closed;
    },
    get lastError() {
      return lastError;
    },
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
