/**
 * The nodes a broker connection may use: one broker, or the nodes of a
 * RabbitMQ cluster (`TRAVIS_WORKER_AMQP_URI` lists them comma-separated).
 * Each connect tries them in turn, starting after the node used last, so a
 * worker whose node went away moves on to the next one that answers, and
 * comes back round to the first when the others are away too.
 */
import { errorMessage } from '../../errors.js';
import { BrokerError } from './errors.js';

export class BrokerNodes {
  /** Where the next connect starts. */
  private nextIndex = 0;

  constructor(private readonly uris: readonly string[]) {
    if (uris.length === 0) throw new Error('BrokerNodes needs at least one URI');
  }

  /** The first connection `open` makes to a node that answers; when none does, one error saying why for each. */
  async connect<T>(open: (uri: string) => Promise<T>): Promise<T> {
    const failures: unknown[] = [];
    for (let tried = 0; tried < this.uris.length; tried++) {
      const index = (this.nextIndex + tried) % this.uris.length;
      try {
        const connection = await open(this.uris[index] as string);
        this.nextIndex = (index + 1) % this.uris.length;
        return connection;
      } catch (err) {
        failures.push(err);
      }
    }
    if (failures.length === 1) throw failures[0];
    // `open`'s errors name each node with its password masked.
    const reasons = failures.map(errorMessage);
    throw new BrokerError(`no node of the cluster answered: ${reasons.join('; ')}`, 'closed', { cause: failures.at(-1) });
  }
}
