/**
 * How many jobs wait in the jobs queue, ready to be taken: a passive
 * declare (`queue.declare` with `passive`, amqplib's `checkQueue`) answers
 * with the queue's ready message count, the figure an autoscaler needs
 * (docs/fleet.md, "Demand metrics for the autoscaler").
 *
 * It asks on a channel of its own: a passive declare of a queue that is
 * missing closes its channel (404), and that must never take a consumer's
 * or the commands' channel with it. A closed channel is opened again on
 * the next count.
 */
import type { Channel } from 'amqplib';
import { errorMessage } from '../../errors.js';
import type { Logger } from '../../logger.js';
import { closeChannel } from './close-channel.js';
import type { ReconnectingConnection } from './reconnecting.js';

export class ReadyJobsCounter {
  private channel: Promise<Channel> | undefined;

  constructor(
    private readonly jobs: Pick<ReconnectingConnection, 'model'>,
    private readonly queueName: string,
    private readonly logger: Logger,
  ) {}

  /** Jobs ready in the queue now; throws when the broker is away or the queue cannot be read. */
  async count(): Promise<number> {
    const { messageCount } = await (await this.open()).checkQueue(this.queueName);
    if (!Number.isInteger(messageCount) || messageCount < 0) throw new Error(`the broker answered a message count of ${String(messageCount)}`);
    return messageCount;
  }

  async close(): Promise<void> {
    const channel = await this.channel?.catch(() => undefined);
    this.channel = undefined;
    if (channel) await closeChannel(channel, this.logger, 'ready jobs');
  }

  private open(): Promise<Channel> {
    if (this.channel) return this.channel;
    const opening = this.jobs.model().createChannel();
    this.channel = opening;
    opening.then(
      (channel) => {
        channel.on('error', (err: Error) => this.logger.debug({ err: err.message }, 'the ready-jobs channel closed; opening another on the next count'));
        channel.on('close', () => {
          if (this.channel === opening) this.channel = undefined;
        });
      },
      (err: unknown) => {
        this.logger.debug({ err: errorMessage(err) }, 'could not open the ready-jobs channel');
        if (this.channel === opening) this.channel = undefined;
      },
    );
    return opening;
  }
}
