/**
 * The bench's side of the broker: publishing jobs in travis' format and
 * watching what the worker reports, with each message stamped on receipt
 * (the AMQP timestamp property has one-second resolution, useless here).
 */
import { connect, type Channel, type ChannelModel, type ConfirmChannel, type ConsumeMessage } from 'amqplib';
import { LOG_QUEUE, REPORTING_EXCHANGE, STATE_QUEUE } from '../src/queue/amqp/messages.js';
import { wallUs } from './stats.js';

const DURABLE_QUEUE = { durable: true, exclusive: false, autoDelete: false } as const;
const TERMINAL_STATES = new Set(['passed', 'failed', 'errored', 'cancelled', 'reset']);

/** What the bench saw of one job: receipt times in µs since the epoch. */
export interface JobTimes {
  publishedUs?: number;
  receivedUs?: number;
  startedUs?: number;
  terminalUs?: number;
  terminalState?: string;
}

/** A log part as received. */
export interface ReceivedPart {
  jobId: number;
  log: string;
  number: number;
  final: boolean;
  receiptUs: number;
}

/** A trivial job in the shape of a real payload (docs/protocol.md), running `script` with the built-in generator. */
export function jobPayload(id: number, script: string[], queue: string): Buffer {
  return Buffer.from(
    JSON.stringify({
      type: 'test',
      uuid: `bench-${id}`,
      queue,
      vm_type: 'default',
      config: { language: 'shell', os: 'linux', script },
      env_vars: [],
      job: { id, number: `${id}.1`, queued_at: new Date().toISOString().replace(/\.\d+Z$/, 'Z') },
      source: { id, number: String(id), event_type: 'push' },
      repository: { id: 1, slug: 'mayfly/bench' },
      ssh_key: null,
      timeouts: { hard_limit: null, log_silence: null },
    }),
  );
}

/** One connection of the bench: declares what the worker will use, publishes jobs, watches states and logs. */
export class BrokerClient {
  readonly jobs = new Map<number, JobTimes>();
  /** Version of the broker, from its connection properties. */
  readonly serverVersion: string;
  #terminalCount = 0;
  #stateMessages = 0;
  #logMessages = 0;
  #waiters: Array<() => void> = [];
  #logListeners = new Set<(part: ReceivedPart) => void>();

  private constructor(
    private readonly model: ChannelModel,
    private readonly publisher: ConfirmChannel,
    private readonly consumer: Channel,
  ) {
    const version = model.connection.serverProperties.version;
    this.serverVersion = typeof version === 'string' ? version : 'unknown';
  }

  static async open(uri: string): Promise<BrokerClient> {
    const model = await connect(uri);
    model.on('error', () => undefined);
    const publisher = await model.createConfirmChannel();
    const consumer = await model.createChannel();
    // As the worker declares them, so that jobs published before it starts are kept.
    await consumer.assertExchange(REPORTING_EXCHANGE, 'topic', { durable: true, autoDelete: false, internal: false });
    await consumer.assertQueue(STATE_QUEUE, DURABLE_QUEUE);
    await consumer.assertQueue(LOG_QUEUE, DURABLE_QUEUE);
    await consumer.bindQueue(LOG_QUEUE, REPORTING_EXCHANGE, LOG_QUEUE);
    const client = new BrokerClient(model, publisher, consumer);
    await consumer.consume(STATE_QUEUE, (message) => client.#onState(message), { noAck: true });
    await consumer.consume(LOG_QUEUE, (message) => client.#onLog(message), { noAck: true });
    return client;
  }

  /** State updates and log parts received so far (for messages per job). */
  get counts(): { states: number; logs: number; terminal: number } {
    return { states: this.#stateMessages, logs: this.#logMessages, terminal: this.#terminalCount };
  }

  async declareJobQueue(name: string): Promise<void> {
    await this.publisher.assertQueue(name, DURABLE_QUEUE);
  }

  async purge(...queues: string[]): Promise<void> {
    for (const queue of queues) await this.publisher.purgeQueue(queue);
  }

  /** Publish one job (persistent, as the hub does); returns when it was handed to the socket, in µs. */
  publishJob(queue: string, id: number, script: string[]): number {
    const times: JobTimes = {};
    this.jobs.set(id, times);
    const body = jobPayload(id, script, queue);
    times.publishedUs = wallUs();
    this.publisher.sendToQueue(queue, body, { persistent: true, contentType: 'application/json' });
    return times.publishedUs;
  }

  /** Wait for the broker's confirms of everything published so far. */
  async confirmed(): Promise<void> {
    await this.publisher.waitForConfirms();
  }

  /** Wait until `ready()` holds (checked after every state update), or the signal aborts. */
  until(ready: () => boolean, signal: AbortSignal): Promise<void> {
    if (ready()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const check = (): void => {
        if (!ready()) return;
        signal.removeEventListener('abort', onAbort);
        this.#waiters = this.#waiters.filter((waiter) => waiter !== check);
        resolve();
      };
      const onAbort = (): void => {
        this.#waiters = this.#waiters.filter((waiter) => waiter !== check);
        reject(signal.reason);
      };
      signal.addEventListener('abort', onAbort, { once: true });
      this.#waiters.push(check);
    });
  }

  /** Wait for job `id`'s terminal state; returns its times. */
  async terminal(id: number, signal: AbortSignal): Promise<JobTimes> {
    await this.until(() => this.jobs.get(id)?.terminalUs !== undefined, signal);
    return this.jobs.get(id) as JobTimes;
  }

  /** Receive every log part (parsed) until the returned function is called. */
  onLog(listener: (part: ReceivedPart) => void): () => void {
    this.#logListeners.add(listener);
    return () => this.#logListeners.delete(listener);
  }

  async close(): Promise<void> {
    await this.model.close().catch(() => undefined);
  }

  #onState(message: ConsumeMessage | null): void {
    if (message === null) return;
    const receiptUs = wallUs();
    this.#stateMessages++;
    const body = JSON.parse(message.content.toString('utf8')) as { id: number; state: string };
    let times = this.jobs.get(body.id);
    if (times === undefined) {
      times = {};
      this.jobs.set(body.id, times);
    }
    if (body.state === 'received') times.receivedUs ??= receiptUs;
    else if (body.state === 'started') times.startedUs ??= receiptUs;
    else if (TERMINAL_STATES.has(body.state) && times.terminalUs === undefined) {
      times.terminalUs = receiptUs;
      times.terminalState = body.state;
      this.#terminalCount++;
    }
    for (const waiter of [...this.#waiters]) waiter();
  }

  #onLog(message: ConsumeMessage | null): void {
    if (message === null) return;
    const receiptUs = wallUs();
    this.#logMessages++;
    // Parsing 60,000 parts costs this process a second of CPU: only when someone listens.
    if (this.#logListeners.size === 0) return;
    const body = JSON.parse(message.content.toString('utf8')) as { id: number; log: string; number: number; final: boolean };
    const part: ReceivedPart = { jobId: body.id, log: body.log, number: body.number, final: body.final, receiptUs };
    for (const listener of this.#logListeners) listener(part);
  }
}
