/**
 * RabbitMQ for integration tests: a vhost per test file (the protocol's
 * exchange and queue names are fixed, so test runs are kept apart by
 * vhost), reading and publishing raw messages, and closing the worker's
 * connections from the broker's side. Uses `rabbitmqctl` (about 2 s a call
 * on a small machine), so call it from beforeAll, not per test.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { connect, type Channel, type ChannelModel, type MessageFields, type MessageProperties, type Options } from 'amqplib';
import type { AmqpConfig } from '../../src/config/types.js';

const run = promisify(execFile);

export const BROKER = 'amqp://guest:guest@127.0.0.1:5672';

export async function rabbitmqctl(...args: string[]): Promise<string> {
  const { stdout } = await run('rabbitmqctl', ['-q', ...args], { timeout: 60_000 });
  return stdout;
}

export interface TestVhost {
  uri: string;
  name: string;
  delete(): Promise<void>;
}

/** A fresh vhost `mayfly-test-<random>` that guest may use fully. */
export async function createVhost(): Promise<TestVhost> {
  const name = `mayfly-test-${randomBytes(4).toString('hex')}`;
  await rabbitmqctl('add_vhost', name);
  await rabbitmqctl('set_permissions', '-p', name, 'guest', '.*', '.*', '.*');
  return {
    name,
    uri: `${BROKER}/${encodeURIComponent(name)}`,
    async delete() {
      await rabbitmqctl('delete_vhost', name);
    },
  };
}

/**
 * Dead-letter what is rejected from the queues of `vhost` whose names match
 * `queuePattern` into the queue `deadLetters`. The worker declares the job
 * queue without arguments (as travis does), so the route comes from a
 * policy, as an operator would set it.
 */
export async function routeDeadLetters(vhost: TestVhost, queuePattern: string, deadLetters: string): Promise<void> {
  await rabbitmqctl('set_policy', '-p', vhost.name, 'dead-letters', queuePattern, '{"dead-letter-exchange":"dlx"}', '--apply-to', 'queues');
  await withChannel(vhost.uri, async (channel) => {
    await channel.assertExchange('dlx', 'fanout', { durable: false });
    await channel.assertQueue(deadLetters, { durable: false });
    await channel.bindQueue(deadLetters, 'dlx', '');
  });
}

/** `use` a fresh channel on a connection of its own, closed after. */
export function withChannel<T>(uri: string, use: (channel: Channel) => Promise<T>): Promise<T> {
  return withConnection(uri, async (connection) => use(await connection.createChannel()));
}

/** Connect, run `use`, always close. */
/** The worker's AMQP settings for a test on `uri`: quick reconnects and a short delivery timeout. */
export function testAmqpConfig(uri: string, overrides: Partial<AmqpConfig> = {}): AmqpConfig {
  return {
    uri,
    heartbeatMs: 10_000,
    consumerPriority: 0,
    insecure: false,
    sharding: false,
    reconnect: { initialMs: 50, maxMs: 500 },
    logDeliveryTimeoutMs: 10_000,
    queueType: 'classic',
    deliveryLimit: 20,
    ...overrides,
  };
}

export async function withConnection<T>(uri: string, use: (connection: ChannelModel) => Promise<T>): Promise<T> {
  const connection = await connect(uri);
  connection.on('error', () => undefined);
  try {
    return await use(connection);
  } finally {
    await connection.close().catch(() => undefined);
  }
}

export interface DrainedMessage {
  /** The body, parsed as JSON. */
  body: unknown;
  /** The body as text, for byte-exact checks. */
  text: string;
  properties: MessageProperties;
  fields: MessageFields;
}

/**
 * Consume exactly `count` messages from `queue` (acknowledging them), in
 * order. Rejects with the signal's reason if they don't all come.
 */
export async function drain(uri: string, queue: string, count: number, signal: AbortSignal): Promise<DrainedMessage[]> {
  return withChannel(uri, async (channel) => {
    channel.on('error', () => undefined);
    const messages: DrainedMessage[] = [];
    try {
      await new Promise<void>((resolve, reject) => {
        if (count === 0) return resolve();
        const onAbort = (): void => reject(signal.reason);
        if (signal.aborted) return onAbort();
        signal.addEventListener('abort', onAbort, { once: true });
        channel
          .consume(queue, (message) => {
            if (!message || messages.length >= count) return;
            channel.ack(message);
            const text = message.content.toString('utf8');
            let body: unknown;
            try {
              body = JSON.parse(text);
            } catch {
              body = undefined;
            }
            messages.push({ body, text, properties: message.properties, fields: message.fields });
            if (messages.length === count) {
              signal.removeEventListener('abort', onAbort);
              resolve();
            }
          })
          .catch(reject);
      });
    } finally {
      await channel.close().catch(() => undefined);
    }
    return messages;
  });
}

/** Publish a raw body (not necessarily JSON) to an exchange; `""` with a queue name as key sends to that queue. Waits for the confirm. */
export async function publishRaw(
  uri: string,
  exchange: string,
  routingKey: string,
  body: string | Buffer,
  options: Options.Publish = {},
): Promise<void> {
  await withConnection(uri, async (connection) => {
    const channel = await connection.createConfirmChannel();
    channel.on('error', () => undefined);
    channel.publish(exchange, routingKey, Buffer.isBuffer(body) ? body : Buffer.from(body), { persistent: true, ...options });
    await channel.waitForConfirms();
    await channel.close();
  });
}

/** Messages ready in `queue` (not counting unacknowledged ones). */
export async function messageCount(uri: string, queue: string): Promise<number> {
  return withChannel(uri, async (channel) => (await channel.checkQueue(queue)).messageCount);
}

/** Empty the named queues (those that exist). */
export async function purge(uri: string, ...queues: string[]): Promise<void> {
  await withConnection(uri, async (connection) => {
    for (const queue of queues) {
      const channel = await connection.createChannel();
      channel.on('error', () => undefined);
      try {
        await channel.purgeQueue(queue);
        await channel.close();
      } catch {
        // the queue does not exist (yet): nothing to purge; the channel closed itself
      }
    }
  });
}

/** The connections of `vhost`, with the name their client gave itself (client property `connection_name`). */
async function listConnections(vhost: string): Promise<Array<{ pid: string; name: string }>> {
  // The table format prints pids as close_connection takes them (`<rabbit@host.N.N.N>`); JSON does not.
  const rows = (await rabbitmqctl('list_connections', '-p', vhost, '--no-table-headers', 'pid', 'client_properties')).split('\n');
  const connections: Array<{ pid: string; name: string }> = [];
  for (const row of rows) {
    const [pid, properties] = row.split('\t');
    const name = properties?.match(/\{"connection_name","((?:[^"\\]|\\.)*)"\}/)?.[1];
    if (pid && name !== undefined) connections.push({ pid, name });
  }
  return connections;
}

/** The names of the connections of `vhost` whose client named itself starting with `namePrefix`. */
export async function connectionNames(vhost: string, namePrefix: string): Promise<string[]> {
  return (await listConnections(vhost)).filter(({ name }) => name.startsWith(namePrefix)).map(({ name }) => name);
}

/**
 * Close, from the broker's side, every connection of `vhost` whose client
 * named itself starting with `namePrefix` (client property `connection_name`).
 * Returns how many were closed.
 */
export async function closeConnections(vhost: string, namePrefix: string, reason = 'closed by a test'): Promise<number> {
  let closed = 0;
  for (const { pid, name } of await listConnections(vhost)) {
    if (!name.startsWith(namePrefix)) continue;
    await rabbitmqctl('close_connection', pid, reason);
    closed++;
  }
  return closed;
}

export interface ConsumerInfo {
  queue_name: string;
  consumer_tag: string;
  ack_required: boolean;
  prefetch_count: number;
  arguments: unknown;
}

export async function listConsumers(vhost: string): Promise<ConsumerInfo[]> {
  return JSON.parse(
    await rabbitmqctl('list_consumers', '-p', vhost, 'queue_name', 'consumer_tag', 'ack_required', 'prefetch_count', 'arguments', '--formatter', 'json'),
  ) as ConsumerInfo[];
}
