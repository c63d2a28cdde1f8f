/**
 * The broker objects of docs/protocol.md, declared exactly as travis-ci/worker
 * declares them, so an existing installation's objects match (a declare
 * with other attributes would fail with 406 PRECONDITION_FAILED).
 */
import type { Channel, ChannelModel } from 'amqplib';
import type { BrokerConnection } from './connection.js';
import { ConfigError } from '../../errors.js';
import type { Logger } from '../../logger.js';
import { isUnknownExchangeType } from './errors.js';
import { LOG_QUEUE, REPORTING_EXCHANGE, SHARDED_LOG_EXCHANGE, STATE_QUEUE } from './messages.js';
import { closeChannel } from './close-channel.js';

const DURABLE_QUEUE = { durable: true, exclusive: false, autoDelete: false } as const;
const DURABLE_EXCHANGE = { durable: true, autoDelete: false, internal: false } as const;

/** On the jobs connection: the job queue, `reporting` and the state queue. */
export async function declareJobObjects(connection: ChannelModel, queueName: string, logger: Logger): Promise<void> {
  await withChannel(connection, logger, async (channel) => {
    await channel.assertQueue(queueName, DURABLE_QUEUE);
    await channel.assertExchange(REPORTING_EXCHANGE, 'topic', DURABLE_EXCHANGE);
    await channel.assertQueue(STATE_QUEUE, DURABLE_QUEUE);
  });
}

/**
 * On the logs connection (the jobs one unless `TRAVIS_WORKER_LOGS_AMQP_URI`
 * is set): `reporting` plus the log queue and its binding, or, with
 * sharding, the `x-modulus-hash` exchange (a sharding policy matching its
 * name makes it sharded, as travis expects the operator to set up).
 */
export async function declareLogObjects(connection: BrokerConnection, sharding: boolean, logger: Logger): Promise<void> {
  await withChannel(connection.model, logger, async (channel) => {
    if (sharding) {
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
      return;
    }
    await channel.assertExchange(REPORTING_EXCHANGE, 'topic', DURABLE_EXCHANGE);
    await channel.assertQueue(LOG_QUEUE, DURABLE_QUEUE);
    await channel.bindQueue(LOG_QUEUE, REPORTING_EXCHANGE, LOG_QUEUE);
  });
}

/** A channel for a few declarations; a failed declare closes it on the broker's side, which is fine. */
async function withChannel(connection: ChannelModel, logger: Logger, use: (channel: Channel) => Promise<void>): Promise<void> {
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
