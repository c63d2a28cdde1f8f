/**
 * The broker connection against the real broker: its socket writes are
 * coalesced per tick (src/queue/amqp/connection.ts), and a burst of messages
 * published in one tick, far over the socket's write buffer, still
 * arrives whole, in order, and confirmed. And a channel closed just as its
 * connection dies is closed, not waited on for ever (close-channel.ts); a
 * lost connection comes back whatever a reconnect attempt throws
 * (reconnecting.ts).
 */
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { closeChannel } from '../../src/queue/amqp/close-channel.js';
import { openConnection, type BrokerConnection, type OpenConnectionOptions } from '../../src/queue/amqp/connection.js';
import { ReconnectingConnection } from '../../src/queue/amqp/reconnecting.js';
import { silentLogger } from '../../src/logger.js';
import { BROKER, createVhost, drain, type TestVhost } from '../helpers/rabbitmq.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';

let vhost: TestVhost;

beforeAll(async () => {
  vhost = await createVhost();
});

afterAll(async () => {
  await vhost.delete();
});

async function open(uri = vhost.uri, onLost: OpenConnectionOptions['onLost'] = () => undefined): Promise<BrokerConnection> {
  return openConnection({
    uri,
    role: 'logs',
    logger: silentLogger,
    heartbeatMs: 0,
    insecure: false,
    connectionName: `mayfly-test-${randomBytes(4).toString('hex')}`,
    onLost,
  });
}

it('coalesces the writes of a tick: a burst larger than the socket buffer arrives whole and in order', async () => {
  const connection = await open();
  try {
    expect(connection.writesCoalesced).toBe(true);
    const channel = await connection.model.createConfirmChannel();
    const queue = `burst-${randomBytes(4).toString('hex')}`;
    await channel.assertQueue(queue, { durable: false });
    // 600 messages of 1.7 kB (about 1 MB) in one synchronous run: many socket buffers' worth, one tick.
    const bodies = Array.from({ length: 600 }, (_, i) => Buffer.from(JSON.stringify({ n: i, pad: 'é'.repeat(850) })));
    for (const body of bodies) channel.publish('', queue, body, { persistent: true });
    await channel.waitForConfirms();
    const drained = await drain(vhost.uri, queue, bodies.length, AbortSignal.timeout(30_000));
    expect(drained.map((m) => m.text)).toEqual(bodies.map((b) => b.toString('utf8')));
    await channel.deleteQueue(queue);
    await channel.close();
  } finally {
    await connection.close();
  }
});

it('closes a channel whose connection dies before the broker answers the close (amqplib would wait for ever)', async () => {
  const broker = new URL(BROKER);
  const proxy = await TcpProxy.start({ host: broker.hostname, port: Number(broker.port) });
  const connection = await open(proxy.uri(vhost.uri));
  try {
    const channel = await connection.model.createChannel();
    const signal = AbortSignal.timeout(10_000);
    // The Close frame goes into the hole: no CloseOk will come.
    proxy.blackHole();
    const closing = closeChannel(channel, silentLogger, 'test');
    await proxy.untilSwallowed(1, signal);
    proxy.cut();
    await closing;
    expect(connection.closed).toBe(true);
  } finally {
    await connection.close();
    await proxy.close();
  }
});

it('reconnects after an attempt that threw a TypeError (p-retry ends its retries for good on one)', async () => {
  const broker = new URL(BROKER);
  const proxy = await TcpProxy.start({ host: broker.hostname, port: Number(broker.port) });
  let prepared = 0;
  const connection = new ReconnectingConnection({
    role: 'jobs',
    connect: (onLost) => open(proxy.uri(vhost.uri), onLost),
    prepare: async () => {
      prepared += 1;
      // What a bug in a client library throws while a connection is half made.
      if (prepared === 2) throw new TypeError("Cannot read properties of undefined (reading 'channel')");
    },
    backoff: { initialMs: 10, maxMs: 50 },
    logger: silentLogger,
  });
  try {
    await connection.start();
    const restored = once(connection, 'restored', { signal: AbortSignal.timeout(10_000) });
    proxy.cut();
    await restored;
    expect(prepared).toBe(3);
    expect(connection.up).toBe(true);
  } finally {
    await connection.close();
    await proxy.close();
  }
});
