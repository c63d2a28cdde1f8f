/**
 * The log sink's pipeline against an in-memory confirm publisher whose
 * confirms and buffer the test settles by hand.
 */
import { describe, expect, it } from 'vitest';
import type { Options } from 'amqplib';
import type { ConfirmPublisher, PublishResult } from '../../src/amqp/confirm-channel.js';
import { BrokerError } from '../../src/amqp/errors.js';
import { AmqpLogSink, LOG_PUBLISH_WINDOW } from '../../src/amqp/log-sink.js';
import type { LogPart } from '../../src/queue/contract.js';

interface Sent {
  exchange: string;
  routingKey: string;
  body: Record<string, unknown>;
  options: Options.Publish;
  ack(): void;
  nack(): void;
}

class FakePublisher implements ConfirmPublisher {
  readonly sent: Sent[] = [];
  /** When false, publishes report a full buffer until `drain()`. */
  writable = true;
  private drainWaiters: Array<() => void> = [];

  async publish(exchange: string, routingKey: string, content: Buffer, options: Options.Publish): Promise<PublishResult> {
    let ack!: () => void;
    let nack!: () => void;
    const confirmed = new Promise<void>((resolve, reject) => {
      ack = resolve;
      nack = () => reject(new BrokerError('nacked', 'nacked'));
    });
    this.sent.push({ exchange, routingKey, body: JSON.parse(content.toString()), options, ack, nack });
    return {
      written: this.writable,
      confirmed,
      drained: () => new Promise<void>((resolve) => this.drainWaiters.push(resolve)),
    };
  }

  drain(): void {
    this.writable = true;
    for (const wake of this.drainWaiters.splice(0)) wake();
  }
}

function part(number: number, final = false): LogPart {
  return { number, content: final ? '' : `line ${number}\n`, final };
}

/** Settle the promises that can settle now (I/O-free: microtasks and one macrotask turn). */
function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

function track(promise: Promise<unknown>): { done: boolean; failed: unknown } {
  const state: { done: boolean; failed: unknown } = { done: false, failed: undefined };
  promise.then(
    () => (state.done = true),
    (err: unknown) => {
      state.done = true;
      state.failed = err;
    },
  );
  return state;
}

describe('AmqpLogSink', () => {
  it('publishes to reporting / reporting.jobs.logs with the job id and uuid', async () => {
    const publisher = new FakePublisher();
    const sink = new AmqpLogSink({ publisher, jobId: 7, uuid: 'u-7', sharding: false });
    await sink.publish(part(0));
    expect(publisher.sent[0]).toMatchObject({
      exchange: 'reporting',
      routingKey: 'reporting.jobs.logs',
      body: { id: 7, log: 'line 0\n', number: 0, uuid: 'u-7', final: false },
      options: { type: 'job:test:log', contentType: 'application/json', deliveryMode: 2 },
    });
  });

  it('routes by job id to the sharded exchange when sharding', async () => {
    const publisher = new FakePublisher();
    const sink = new AmqpLogSink({ publisher, jobId: 721270, uuid: 'u', sharding: true });
    await sink.publish(part(0));
    expect(publisher.sent[0]).toMatchObject({ exchange: 'reporting.jobs.logs_sharded', routingKey: '721270' });
  });

  it('fills an empty meta.infra from the queue setting', async () => {
    const publisher = new FakePublisher();
    const sink = new AmqpLogSink({ publisher, jobId: 1, uuid: 'u', sharding: false, infra: 'gce' });
    await sink.publish({ ...part(0), meta: { repo: 'o/r', infra: '' } });
    expect(publisher.sent[0]?.body.meta).toEqual({ repo: 'o/r', infra: 'gce' });
  });

  it(`hands parts over at once up to ${LOG_PUBLISH_WINDOW} unconfirmed, then waits for a confirm`, async () => {
    const publisher = new FakePublisher();
    const sink = new AmqpLogSink({ publisher, jobId: 1, uuid: 'u', sharding: false });
    for (let n = 0; n < LOG_PUBLISH_WINDOW; n++) await sink.publish(part(n));
    const blocked = track(sink.publish(part(LOG_PUBLISH_WINDOW)));
    await settle();
    expect(blocked.done).toBe(false);
    expect(publisher.sent).toHaveLength(LOG_PUBLISH_WINDOW);

    publisher.sent[0]?.ack();
    await settle();
    expect(blocked.done).toBe(true);
    expect(publisher.sent).toHaveLength(LOG_PUBLISH_WINDOW + 1);
  });

  it('waits for the channel to drain when its buffer is full', async () => {
    const publisher = new FakePublisher();
    publisher.writable = false;
    const sink = new AmqpLogSink({ publisher, jobId: 1, uuid: 'u', sharding: false });
    const first = track(sink.publish(part(0)));
    await settle();
    expect(first.done).toBe(false);
    publisher.drain();
    await settle();
    expect(first.done).toBe(true);
  });

  it('keeps call order on the wire even when calls do not wait for each other', async () => {
    const publisher = new FakePublisher();
    const sink = new AmqpLogSink({ publisher, jobId: 1, uuid: 'u', window: 2, sharding: false });
    const calls = Array.from({ length: 10 }, (_, n) => sink.publish(part(n, n === 9)));
    const confirming = (async () => {
      while (publisher.sent.length < 10) {
        await settle();
        for (const sent of publisher.sent) sent.ack();
      }
    })();
    await Promise.all(calls);
    await confirming;
    expect(publisher.sent.map((sent) => sent.body.number)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    await sink.flushed();
  });

  it('flushed() resolves only once every part so far is confirmed', async () => {
    const publisher = new FakePublisher();
    const sink = new AmqpLogSink({ publisher, jobId: 1, uuid: 'u', sharding: false });
    await sink.publish(part(0));
    await sink.publish(part(1));
    const flushed = track(sink.flushed());
    publisher.sent[1]?.ack();
    await settle();
    expect(flushed.done).toBe(false);
    publisher.sent[0]?.ack();
    await settle();
    expect(flushed).toEqual({ done: true, failed: undefined });
  });

  it('flushed() and later publishes reject once a part was nacked', async () => {
    const publisher = new FakePublisher();
    const sink = new AmqpLogSink({ publisher, jobId: 1, uuid: 'u', sharding: false });
    await sink.publish(part(0));
    await sink.publish(part(1));
    publisher.sent[0]?.nack();
    publisher.sent[1]?.ack();
    await expect(sink.flushed()).rejects.toMatchObject({ kind: 'nacked' });
    await expect(sink.publish(part(2))).rejects.toMatchObject({ kind: 'nacked' });
    expect(publisher.sent).toHaveLength(2);
  });

  it('rejects a publish the channel refuses, and flushed() with it', async () => {
    const publisher: ConfirmPublisher = {
      publish: () => Promise.reject(new BrokerError('channel closed', 'closed')),
    };
    const sink = new AmqpLogSink({ publisher, jobId: 1, uuid: 'u', sharding: false });
    await expect(sink.publish(part(0))).rejects.toMatchObject({ kind: 'closed' });
    await expect(sink.flushed()).rejects.toMatchObject({ kind: 'closed' });
  });
});
