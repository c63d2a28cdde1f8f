/**
 * The broker's raw figures, measured with plain amqplib on the same broker
 * and vhost as the worker: one-hop latency, a two-hop round trip through
 * an echo process (what a job's `received` travels: bench -> worker ->
 * bench), and the publish/consume rate (the ceiling for throughput).
 */
import { connect, type ChannelModel, type ConsumeMessage } from 'amqplib';
import { BenchChild } from './child-process.js';
import type { BenchContext } from './context.js';
import { summarize, wallUs, type Summary } from './stats.js';

const DURABLE_QUEUE = { durable: true, exclusive: false, autoDelete: false } as const;
/** About the size of a state update; persistent, as the worker's messages are. */
const BODY = Buffer.from(JSON.stringify({ id: 1, state: 'received', meta: { state_update_count: 1, uuid: 'x'.repeat(36) }, pad: 'x'.repeat(150) }));
const PUBLISH = { persistent: true, contentType: 'application/json' } as const;

async function withConnection<T>(uri: string, use: (model: ChannelModel) => Promise<T>): Promise<T> {
  const model = await connect(uri);
  model.on('error', () => undefined);
  try {
    return await use(model);
  } finally {
    await model.close().catch(() => undefined);
  }
}

/** Send one message at a time and time each from publish to receipt on `receiveFrom`. */
async function sequentialLatency(
  model: ChannelModel,
  sendTo: string,
  receiveFrom: string,
  count: number,
  signal: AbortSignal,
): Promise<number[]> {
  const publisher = await model.createConfirmChannel();
  const consumer = await model.createChannel();
  const latencies: number[] = [];
  let arrived: ((message: ConsumeMessage) => void) | undefined;
  const { consumerTag } = await consumer.consume(receiveFrom, (message) => message && arrived?.(message), { noAck: true });
  try {
    for (let i = 0; i < count; i++) {
      signal.throwIfAborted();
      const got = new Promise<number>((resolve, reject) => {
        const onAbort = (): void => reject(signal.reason);
        signal.addEventListener('abort', onAbort, { once: true });
        arrived = () => {
          signal.removeEventListener('abort', onAbort);
          resolve(wallUs());
        };
      });
      const sentUs = wallUs();
      publisher.sendToQueue(sendTo, BODY, PUBLISH, () => undefined);
      latencies.push(((await got) - sentUs) / 1000);
    }
  } finally {
    await consumer.cancel(consumerTag).catch(() => undefined);
  }
  return latencies;
}

/** One hop: publish, consumed by this process. */
export async function oneHopLatency(context: BenchContext, count: number): Promise<Summary> {
  return withConnection(context.amqpUri, async (model) => {
    const setup = await model.createChannel();
    await setup.assertQueue('bench.hop', DURABLE_QUEUE);
    return summarize(await sequentialLatency(model, 'bench.hop', 'bench.hop', count, context.signal));
  });
}

/** Two hops: publish, consumed and re-published by another process (prefetch 1, as a processor), consumed here. */
export async function echoRoundTrip(context: BenchContext, count: number): Promise<Summary> {
  return withConnection(context.amqpUri, async (model) => {
    const setup = await model.createChannel();
    await setup.assertQueue('bench.echo.in', DURABLE_QUEUE);
    await setup.assertQueue('bench.echo.out', DURABLE_QUEUE);
    const echo = new BenchChild(context.resources, 'amqp echo');
    try {
      await echo.startEcho(context.amqpUri, 'bench.echo.in', 'bench.echo.out', context.signal);
      return summarize(await sequentialLatency(model, 'bench.echo.in', 'bench.echo.out', count, context.signal));
    } finally {
      await echo.release();
    }
  });
}

export interface RawRate {
  messages: number;
  seconds: number;
  perSecond: number;
}

/**
 * `count` persistent messages published with confirms (pipelined) on one
 * connection while another consumes them (prefetch 1000, one ack each):
 * messages per second from the first publish to the last delivery.
 * `body`: what each message carries (by default about a state update).
 */
export async function rawPublishConsumeRate(context: BenchContext, count: number, body: Buffer = BODY): Promise<RawRate> {
  const { amqpUri: uri, signal } = context;
  return withConnection(uri, (consumerModel) =>
    withConnection(uri, async (publisherModel) => {
      const consumer = await consumerModel.createChannel();
      await consumer.assertQueue('bench.rate', DURABLE_QUEUE);
      await consumer.purgeQueue('bench.rate');
      await consumer.prefetch(1000);
      let received = 0;
      let lastUs = 0;
      const all = new Promise<void>((resolve, reject) => {
        signal.addEventListener('abort', () => reject(signal.reason), { once: true });
        void consumer.consume('bench.rate', (message) => {
          if (message === null) return;
          consumer.ack(message);
          received++;
          if (received === count) {
            lastUs = wallUs();
            resolve();
          }
        });
      });
      const publisher = await publisherModel.createConfirmChannel();
      const startUs = wallUs();
      for (let i = 0; i < count; i++) {
        signal.throwIfAborted();
        if (!publisher.sendToQueue('bench.rate', body, PUBLISH)) await new Promise((resolve) => publisher.once('drain', resolve));
        // Keep at most ~1000 unconfirmed, as a confirming publisher would.
        if (i % 1000 === 999) await publisher.waitForConfirms();
      }
      await all;
      const seconds = (lastUs - startUs) / 1e6;
      return { messages: count, seconds, perSecond: count / seconds };
    }),
  );
}
