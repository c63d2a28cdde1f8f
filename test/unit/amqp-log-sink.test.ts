/**
 * The log sink's pipeline against an in-memory confirm publisher whose
 * confirms and buffer the test settles by hand.
 */
import { describe, expect, it, vi } from 'vitest';
import type { Options } from 'amqplib';
import type { ConfirmPublisher, PublishResult } from '../../src/queue/amqp/confirm-channel.js';
import { BrokerError } from '../../src/queue/amqp/errors.js';
import { AmqpLogSink, LOG_PUBLISH_WINDOW, type AmqpLogSinkOptions } from '../../src/queue/amqp/log-sink.js';
import { silentLogger } from '../../src/logger.js';
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

  async publish(exchange: string, routingKey: string, content: Buffer, options: Options.Publish, _signal: AbortSignal): Promise<PublishResult> {
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

/** A sink as a job makes it, on `publisher`; `lost` (never aborted unless given) and a long delivery timeout by default. */
function makeSink(publisher: ConfirmPublisher, options: Partial<AmqpLogSinkOptions> = {}): AmqpLogSink {
  return new AmqpLogSink({
    publisher,
    jobId: 1,
    uuid: 'u',
    sharding: false,
    deliveryTimeoutMs: 60_000,
    lost: new AbortController().signal,
    logger: silentLogger,
    ...options,
  });
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
    const sink = makeSink(publisher, { jobId: 7, uuid: 'u-7', sharding: false });
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
    const sink = makeSink(publisher, { jobId: 721270, uuid: 'u', sharding: true });
    await sink.publish(part(0));
    expect(publisher.sent[0]).toMatchObject({ exchange: 'reporting.jobs.logs_sharded', routingKey: '721270' });
  });

  it(`hands parts over at once up to ${LOG_PUBLISH_WINDOW} unconfirmed, then waits for a confirm`, async () => {
    const publisher = new FakePublisher();
    const sink = makeSink(publisher);
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
    const sink = makeSink(publisher);
    const first = track(sink.publish(part(0)));
    await settle();
    expect(first.done).toBe(false);
    publisher.drain();
    await settle();
    expect(first.done).toBe(true);
  });

  it('keeps call order on the wire even when calls do not wait for each other', async () => {
    const publisher = new FakePublisher();
    const sink = makeSink(publisher, { jobId: 1, uuid: 'u', window: 2, sharding: false });
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
    const sink = makeSink(publisher);
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

  it('publishes a nacked part again with its number, and flushed() waits for its confirm', async () => {
    const publisher = new FakePublisher();
    const sink = makeSink(publisher);
    await sink.publish(part(0));
    await sink.publish(part(1));
    publisher.sent[0]?.nack();
    publisher.sent[1]?.ack();
    const flushed = track(sink.flushed());
    while (publisher.sent.length < 3) await settle();
    expect(publisher.sent.map((sent) => sent.body.number)).toEqual([0, 1, 0]);
    expect(flushed.done).toBe(false);
    publisher.sent[2]?.ack();
    await sink.flushed();
    expect(sink.failed.aborted).toBe(false);
  });

  it('backs off between resends while the broker keeps refusing parts, and resends at once again after a confirm', async () => {
    vi.useFakeTimers();
    try {
      const publisher = new FakePublisher();
      const sink = makeSink(publisher);
      await sink.publish(part(0));
      const attempts = async (ms: number): Promise<number> => {
        await vi.advanceTimersByTimeAsync(ms);
        return publisher.sent.length;
      };
      publisher.sent[0]?.nack();
      expect(await attempts(0)).toBe(2);
      publisher.sent[1]?.nack();
      expect(await attempts(99)).toBe(2);
      expect(await attempts(1)).toBe(3);
      publisher.sent[2]?.nack();
      expect(await attempts(199)).toBe(3);
      expect(await attempts(1)).toBe(4);
      publisher.sent[3]?.ack();
      await sink.publish(part(1));
      publisher.sent[4]?.nack();
      expect(await attempts(0)).toBe(6);
      expect(publisher.sent.map((sent) => sent.body.number)).toEqual([0, 0, 0, 0, 1, 1]);
      publisher.sent[5]?.ack();
      await sink.flushed();
    } finally {
      vi.useRealTimers();
    }
  });

  it('after its channel dies, publishes every unconfirmed part again in order, before any new part', async () => {
    const publisher = new FakePublisher();
    const sink = makeSink(publisher);
    for (let n = 0; n < 4; n++) await sink.publish(part(n));
    publisher.sent[0]?.ack();
    // The channel closes: amqplib rejects every outstanding confirm.
    for (const sent of publisher.sent.slice(1)) sent.nack();
    const next = sink.publish(part(4));
    while (publisher.sent.length < 8) await settle();
    await next;
    expect(publisher.sent.map((sent) => sent.body.number)).toEqual([0, 1, 2, 3, 1, 2, 3, 4]);
    for (const sent of publisher.sent.slice(4)) sent.ack();
    await sink.flushed();
  });

  it('fails (failed aborts, flushed rejects) when a part stays unconfirmed past the delivery timeout', async () => {
    const publisher: ConfirmPublisher = {
      publish: () => Promise.reject(new BrokerError('channel closed', 'closed')),
    };
    const sink = makeSink(publisher, { deliveryTimeoutMs: 20 });
    await sink.publish(part(0));
    await new Promise((resolve) => sink.failed.addEventListener('abort', resolve, { once: true }));
    expect(sink.failed.reason).toMatchObject({ kind: 'undeliverable' });
    expect((sink.failed.reason as Error).message).toMatch(/log part 0 of job 1 was not confirmed by the broker within 20 ms/);
    await expect(sink.flushed()).rejects.toMatchObject({ kind: 'undeliverable' });
    await expect(sink.publish(part(1))).rejects.toMatchObject({ kind: 'undeliverable' });
  });

  it('sends nothing more once the delivery is lost, and does not call that a log failure', async () => {
    const publisher = new FakePublisher();
    const lost = new AbortController();
    const sink = makeSink(publisher, { lost: lost.signal });
    await sink.publish(part(0));
    lost.abort(new BrokerError('job 1 was lost', 'closed'));
    publisher.sent[0]?.nack();
    await expect(sink.publish(part(1))).rejects.toThrow('job 1 was lost');
    await settle();
    expect(publisher.sent).toHaveLength(1);
    expect(sink.failed.aborted).toBe(false);
  });
});
