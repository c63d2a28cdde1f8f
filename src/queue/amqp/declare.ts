/**
 * The broker objects of docs/protocol.md, declared as travis-ci/worker
 * declares them. A queue that exists already is used as it is, classic or
 * quorum, whatever `TRAVIS_WORKER_AMQP_QUEUE_TYPE` says: declaring it with
 * other attributes would fail with 406 PRECONDITION_FAILED and stop the
 * worker. What is missing is declared with the configured type; a quorum
 * job queue gets a delivery limit and a dead-letter queue, so a job
 * redelivered past the limit is kept there instead of dropped
 * (docs/rabbitmq-cluster.md).
 */
import type { Channel, ChannelModel, Options } from 'amqplib';
import type { BrokerConnection } from './connection.js';
import { ConfigError } from '../../errors.js';
import type { Logger } from '../../logger.js';
import { isNotFound, isPreconditionFailed, isUnknownExchangeType } from './errors.js';
import { LOG_QUEUE, REPORTING_EXCHANGE, SHARDED_LOG_EXCHANGE, STATE_QUEUE } from './messages.js';
import { closeChannel } from './close-channel.js';

const DURABLE_QUEUE: Options.AssertQueue = { durable: true, exclusive: false, autoDelete: false };
const QUORUM_QUEUE = { ...DURABLE_QUEUE, arguments: { 'x-queue-type': 'quorum' } } satisfies Options.AssertQueue;
const DURABLE_EXCHANGE = { durable: true, autoDelete: false, internal: false } as const;

/** How the queues mayfly declares are made: `TRAVIS_WORKER_AMQP_QUEUE_TYPE` and `TRAVIS_WORKER_AMQP_DELIVERY_LIMIT`. */
export interface QueueKind {
  type: 'classic' | 'quorum';
  /** `x-delivery-limit` of a quorum job queue. */
  deliveryLimit: number;
}

/** Where a quorum job queue's broker moves a job delivered `deliveryLimit` times. */
export function deadLetterQueueName(queueName: string): string {
  return `${queueName}.dead-letter`;
}

/** On the jobs connection: the job queue, `reporting` and the state queue. */
export async function declareJobObjects(connection: ChannelModel, queueName: string, kind: QueueKind, logger: Logger): Promise<void> {
  const jobQueue: Options.AssertQueue = kind.type === 'quorum' ? {
    ...QUORUM_QUEUE,
    arguments: {
      ...QUORUM_QUEUE.arguments,
      'x-delivery-limit': kind.deliveryLimit,
      // The default exchange routes by queue name.
      'x-dead-letter-exchange': '',
      'x-dead-letter-routing-key': deadLetterQueueName(queueName),
    },
  } : DURABLE_QUEUE;
  if (kind.type === 'quorum') await ensureQueue(connection, deadLetterQueueName(queueName), QUORUM_QUEUE, logger);
  await ensureQueue(connection, queueName, jobQueue, logger);
  await withChannel(connection, logger, (channel) => channel.assertExchange(REPORTING_EXCHANGE, 'topic', DURABLE_EXCHANGE));
  await ensureQueue(connection, STATE_QUEUE, queueOptions(kind), logger);
}

function queueOptions(kind: QueueKind): Options.AssertQueue {
  return kind.type === 'quorum' ? QUORUM_QUEUE : DURABLE_QUEUE;
}

/**
 * Use the queue `name` if it exists, whatever its type and arguments; else
 * declare it with `options`. The passive check runs on a channel of its own:
 * the broker closes a channel that asks for a missing queue (404).
 */
async function ensureQueue(connection: ChannelModel, name: string, options: Options.AssertQueue, logger: Logger): Promise<void> {
  if (await queueExists(connection, name, logger)) return;
  try {
    await withChannel(connection, logger, (channel) => channel.assertQueue(name, options));
  } catch (err) {
    // Another worker declared it meanwhile, with another type: it exists now, which is all we need.
    if (!isPreconditionFailed(err) || !(await queueExists(connection, name, logger))) throw err;
  }
}

async function queueExists(connection: ChannelModel, name: string, logger: Logger): Promise<boolean> {
  try {
    await withChannel(connection, logger, (channel) => channel.checkQueue(name));
    return true;
  } catch (err) {
    if (isNotFound(err)) return false;
    throw err;
  }
}

/**
 * On the logs connection (the jobs one unless `TRAVIS_WORKER_LOGS_AMQP_URI`
 * is set): `reporting` plus the log queue and its binding, or, with
 * sharding, the `x-modulus-hash` exchange (a sharding policy matching its
 * name makes it sharded, as travis expects the operator to set up).
 */
export async function declareLogObjects(connection: BrokerConnection, sharding: boolean, kind: QueueKind, logger: Logger): Promise<void> {
  if (sharding) {
    await withChannel(connection.model, logger, async (channel) => {
      try {
        await channel.assertExchange(SHARDED_LOG_EXCHANGE, 'x-modulus-hash', DURABLE_EXCHANGE);
      } catch (err) {
        // RabbitMQ refuses an unknown exchange type by closing the whole connection (503).
        if (isUnknownExchangeType(err) || isUnknownExchangeType(connection.lastError)) {
          throw new ConfigError(
            `TRAVIS_WORKER_RABBITMQ_SHARDING=true needs the exchange type x-modulus-hash, which the broker does not know: ` +
              `enable its sharding plugin with \`rabbitmq-plugins enable rabbitmq_sharding\` (or turn sharding off)`,
            { cause: connection.lastError ?? err },
          );
        }
        throw err;
      }
    });
    return;
  }
  await withChannel(connection.model, logger, (channel) => channel.assertExchange(REPORTING_EXCHANGE, 'topic', DURABLE_EXCHANGE));
  await ensureQueue(connection.model, LOG_QUEUE, queueOptions(kind), logger);
  await withChannel(connection.model, logger, (channel) => channel.bindQueue(LOG_QUEUE, REPORTING_EXCHANGE, LOG_QUEUE));
}

/** A channel for a few declarations; a failed declare closes it on the broker's side, which is fine. */
async function withChannel(connection: ChannelModel, logger: Logger, use: (channel: Channel) => Promise<unknown>): Promise<void> {
  const channel = await connection.createChannel();
  let failed = false;
  channel.on('error', (err: Error) => {
    failed = true;
    logger.debug({ err: err.message }, 'declaration channel closed by the broker');
  });
  try {
    await use(channel);
  } finally {
    if (!failed) {
      await closeChannel(channel, logger, 'declarations');
    }
  }
}
