/**
 * A cloud backend under test, driven straight through its `start` against a
 * fake cloud, for tests about what the backend does when the cloud answers
 * wrong: which calls it retried (read back from its log), how each call
 * ended (from the metrics it reported), and whether a start failed the way
 * the worker needs (a requeueing `InstanceStartError`). Every backend and
 * instance a test made is released after it, so the test can then check
 * that the fake holds nothing live and that no secret reached a log line.
 * Last, the same start failing inside a whole worker on RabbitMQ, which must
 * requeue that job and go on to the next.
 */
import { expect } from 'vitest';
import type { Backend, BackendContext, Instance, StartOptions } from '../../src/backend/contract.js';
import { InstanceStartError } from '../../src/errors.js';
import { testAttributes } from './attributes.js';
import { testBackendContext, type RecordedApiCall } from './backend-context.js';
import { captureLog, type CapturedLog, type LogLine } from './log-capture.js';
import { drain, messageCount, publishRaw } from './rabbitmq.js';
import type { TestWorker } from './worker.js';

/** What src/backend/cloud-api.ts logs before it asks a cloud again. */
const RETRYING = 'cloud API call failed, retrying';

/** One backend with its own captured log; `Operation` names its API calls (e.g. `RunInstances`). */
export class BackendHarness<Operation extends string = string> {
  readonly backend: Backend;
  readonly log: CapturedLog = captureLog();
  private readonly apiCalls: RecordedApiCall[];
  private readonly options: StartOptions;
  private readonly instances: Instance[] = [];

  constructor(create: (context: BackendContext) => Backend) {
    const context = testBackendContext({ logger: this.log.logger });
    this.backend = create(context);
    this.apiCalls = context.apiCalls;
    this.options = { signal: new AbortController().signal, progress: () => {}, logger: this.log.logger, recordPhase: () => {} };
  }

  /** Starts an instance of a plain linux job; it is destroyed by `close` (again, if the test destroyed it). */
  async start(): Promise<Instance> {
    const instance = await this.backend.start(testAttributes(), this.options);
    this.instances.push(instance);
    return instance;
  }

  /**
   * Starts an instance that must fail to start, and asserts that it failed
   * so the worker requeues the job. An instance that started by mistake is
   * destroyed by `close` all the same, so the fake is left clean.
   */
  async failedStart(): Promise<InstanceStartError> {
    const error = await this.start().then(
      (instance) => {
        throw new Error(`expected the start to fail, it started ${instance.id}`);
      },
      (err: unknown) => err,
    );
    expect(error).toBeInstanceOf(InstanceStartError);
    expect((error as InstanceStartError).requeue).toBe(true);
    return error as InstanceStartError;
  }

  /** The log lines saying `operation` failed and is asked again, one per retry. */
  retries(operation: Operation): LogLine[] {
    return this.log.lines.filter((line) => line.msg === RETRYING && line['operation'] === operation);
  }

  /** How each call of `operation` ended, in order, as the backend reported it to its metrics. */
  outcomes(operation: Operation): string[] {
    return this.apiCalls.filter((call) => call.operation === operation).map((call) => call.outcome);
  }

  /** Destroys every instance `start` made, then closes the backend. */
  async close(): Promise<void> {
    for (const instance of this.instances.splice(0).reverse()) await instance.destroy();
    await this.backend.close();
  }
}

/**
 * The harnesses and other captured logs of one test; make one per test. `close`
 * after the test releases what they made, then `loggedText` gives everything
 * the test logged, to check no secret leaked into it.
 */
export class BackendHarnesses<Operation extends string = string> {
  private readonly harnesses: BackendHarness<Operation>[] = [];
  private readonly logs: CapturedLog[] = [];

  constructor(private readonly create: (context: BackendContext) => Backend) {}

  /** A new backend for this test, closed by `close`. */
  harness(): BackendHarness<Operation> {
    const harness = new BackendHarness<Operation>(this.create);
    this.harnesses.push(harness);
    this.logs.push(harness.log);
    return harness;
  }

  /** A log for something else the test runs (a whole worker), read back with the backends' by `loggedText`. */
  captureLog(): CapturedLog {
    const log = captureLog();
    this.logs.push(log);
    return log;
  }

  /** Closes every harness, the last made first. */
  async close(): Promise<void> {
    for (const harness of this.harnesses.splice(0).reverse()) await harness.close();
  }

  /** Every line logged to the harnesses and `captureLog`'s logs, as JSON, one a line. */
  loggedText(): string {
    return this.logs.flatMap((log) => log.lines.map((line) => JSON.stringify(line))).join('\n');
  }
}

/** Two jobs for a worker on `queue` of the vhost at `uri`: the start of `requeued` was made to fail, `passed` then runs. */
export interface RequeuedThenPassed {
  uri: string;
  queue: string;
  payload: (jobId: number) => string;
  requeued: number;
  passed: number;
}

/**
 * Publishes the two jobs one after the other and asserts that a failed start
 * did not cost the worker more than that job: it was requeued (states
 * received, reset) and the next one ran and passed (received, started, passed).
 */
export async function expectRequeuedThenPassed(worker: TestWorker, jobs: RequeuedThenPassed): Promise<void> {
  const first = worker.jobDone(jobs.requeued);
  await publishRaw(jobs.uri, '', jobs.queue, jobs.payload(jobs.requeued));
  expect((await first).result).toEqual({ outcome: 'requeued', cause: 'E_INSTANCE_START', instanceReady: false });
  const second = worker.jobDone(jobs.passed);
  await publishRaw(jobs.uri, '', jobs.queue, jobs.payload(jobs.passed));
  expect((await second).result).toEqual({ outcome: 'finished', state: 'passed' });

  const updates = await drain(jobs.uri, 'reporting.jobs.builds', await messageCount(jobs.uri, 'reporting.jobs.builds'), AbortSignal.timeout(20_000));
  const statesOf = (id: number): string[] =>
    updates.map((m) => m.body as { id: number; state: string }).filter((body) => body.id === id).map((body) => body.state);
  expect(statesOf(jobs.requeued)).toEqual(['received', 'reset']);
  expect(statesOf(jobs.passed)).toEqual(['received', 'started', 'passed']);
}
