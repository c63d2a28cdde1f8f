/**
 * Closing a channel without hanging. amqplib's `close()` resolves when the
 * broker answers CloseOk; if the connection dies first, the channel does
 * close (it emits 'close') but that promise never settles, and whoever
 * awaits it (a processor's job source, a shutdown) would wait forever.
 */
import type { Channel } from 'amqplib';
import { errorMessage } from '../../errors.js';
import type { Logger } from '../../logger.js';

/** Close `channel`; resolves once it is closed, however that happens. Never throws: a failure is logged at debug, naming `what`. */
export function closeChannel(channel: Channel, logger: Logger, what: string): Promise<void> {
  return new Promise<void>((resolve) => {
    const closed = (): void => {
      channel.off('close', closed);
      resolve();
    };
    channel.once('close', closed);
    channel.close().then(closed, (err: unknown) => {
      logger.debug({ channel: what, err: errorMessage(err) }, 'closing a channel failed (already closed)');
      closed();
    });
  });
}
