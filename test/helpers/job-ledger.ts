/**
 * The fault-injection suite's ledger (docs/failure-modes.md): reads everything the
 * worker publishes on `reporting.jobs.builds` and `reporting.jobs.logs`, as
 * travis' hub and log consumer would, and checks the worker's promises for a
 * set of jobs: every job reaches exactly one terminal state (after any
 * number of runs that were requeued or abandoned), and the log of the run
 * that finished is complete. Runs are told apart by their `uuid` (state
 * `meta.uuid`, log part `uuid`), which the worker makes up per delivery when
 * the payload has none: payloads of the suite must carry no `uuid`.
 *
 * Each message is acknowledged once recorded, so one the ledger had not
 * read when its broker went away is still queued: `reconnect` reads it then
 * (a copy read twice is dropped as a duplicate).
 */
import { randomUUID } from 'node:crypto';
import { appendFileSync } from 'node:fs';
import { connect, type Channel, type ChannelModel, type ConsumeMessage } from 'amqplib';
import { LOG_QUEUE, REPORTING_EXCHANGE, STATE_QUEUE } from '../../src/queue/amqp/messages.js';
import { errorMessage } from '../../src/errors.js';
import { abortableSleep } from '../../src/util/abort.js';

/** What `report` found for one scenario; one JSON line of `MAYFLY_FAULT_REPORT`. */
export interface LedgerReport {
  scenario: string;
  /** Jobs with at least one state update. */
  jobsRun: number;
  /** Jobs none of whose runs reached exactly one terminal state. */
  jobsLost: number;
  /** Log part numbers missing from runs (below the run's last number). */
  partsLost: number;
  /** Terminal state updates beyond the first, summed over jobs (after deduplication). */
  duplicateTerminalStates: number;
  /** Instances the fakes still had after the reaper's pass, when the test measured it. */
  vmsLeaked?: number;
  /**
   * Jobs whose `reset` the ledger read before the deadline of the cloud's
   * notice, in scenarios that have one; every job must have been (a job
   * requeued later, or never, is a problem).
   */
  requeuedBeforeDeadline?: number;
  /** Every finding, in words; empty when the scenario kept every promise. */
  problems: string[];
}

export interface LedgerOptions {
  /**
   * Stands in for travis' hub, which puts a job back on its queue when the
   * worker reports `reset` (the worker only asks for it). Called once per
   * `reset` seen; a failure becomes a problem of the job.
   */
  onReset?: (jobId: number) => Promise<void>;
  /** Declare the reporting queues as quorum queues, as a worker with `TRAVIS_WORKER_AMQP_QUEUE_TYPE=quorum` does (a cluster). */
  quorum?: boolean;
}

export interface JobLedger {
  /**
   * Resolves once every job in jobIds has a terminal state
   * (passed/failed/errored/cancelled) and every log part published before it
   * has been read; rejects when signal aborts, naming the jobs still missing
   * and the states seen.
   */
  untilFinished(jobIds: number[], signal: AbortSignal): Promise<void>;
  /** Resolves once some run of the job has logged `text` (within one log part, or across parts of that run). */
  untilLogged(jobId: number, text: string, signal: AbortSignal): Promise<void>;
  /** Resolves once every message the two queues held when called has been read. */
  settled(signal: AbortSignal): Promise<void>;
  /** States seen for a job, in arrival order (deduplicated by state_update_count+state+uuid). */
  states(jobId: number): string[];
  /** The log text of the job's latest run (the last one seen), parts in arrival order; '' before any. */
  log(jobId: number): string;
  /**
   * Consume again, on `uri`, after the ledger's connection was lost (its
   * broker went away and is back): the messages it had not acknowledged
   * come again, so nothing published meanwhile is missed. Tries until it
   * consumes or `signal` aborts: a node just back may not serve its quorum
   * queues yet (the broker then closes the connection).
   */
  reconnect(uri: string, signal: AbortSignal): Promise<void>;
  /**
   * Checks the invariants for jobIds and returns the counts. `measured.deadline`
   * (ms since the epoch), for a scenario with a notice from the cloud: every
   * job must have been requeued before it.
   */
  report(scenario: string, jobIds: number[], measured?: Measured): LedgerReport;
  close(): Promise<void>;
}

/** What a scenario measured besides the broker: instances left in the fakes, the deadline of the cloud's notice. */
export interface Measured {
  vmsLeaked?: number;
  deadline?: number;
}

const TERMINAL: ReadonlySet<string> = new Set(['passed', 'failed', 'errored', 'cancelled']);
/** As src/queue/amqp/declare.ts declares them: a declare with other attributes would fail with 406 PRECONDITION_FAILED. */
const DURABLE_QUEUE = { durable: true, exclusive: false, autoDelete: false } as const;
const DURABLE_EXCHANGE = { durable: true, autoDelete: false, internal: false } as const;
/** The AMQP `type` of the ledger's own markers (see `settled`); never a protocol type. */
const MARKER_TYPE = 'mayfly-test:ledger-marker';
/** Between attempts of `reconnect`. */
const RECONNECT_PAUSE_MS = 200;
/** Missing part numbers named in one problem, at most (the count is exact). */
const MISSING_SHOWN = 10;

interface Part {
  /** The message body as sent, to tell a harmless duplicate from a conflicting one. */
  text: string;
  log: string;
  final: boolean;
}

interface Run {
  uuid: string;
  /** Deduplicated states, in arrival order. */
  states: string[];
  parts: Map<number, Part>;
  /** This run's log text in arrival order of first copies, for `untilLogged`. */
  logText: string;
}

interface JobRecord {
  runs: Map<string, Run>;
  /** When the ledger read each `reset` of the job (ms since the epoch). */
  resetsReadAt: number[];
  /** Deduplicated states of all runs, in arrival order. */
  states: string[];
  /** `state_update_count|state|uuid` of the states recorded. */
  stateKeys: Set<string>;
  problems: string[];
}

interface Waiter {
  ready: () => boolean;
  resolve: () => void;
}

/** The message's JSON object, or undefined. */
function parseObject(text: string): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(text);
    return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

const shortRun = (uuid: string): string => (uuid === '' ? 'without uuid' : uuid.slice(0, 8));

/** Waits for `ready`, rejecting with `describe()` when `signal` aborts. */
function waitFor(waiters: Set<Waiter>, ready: () => boolean, signal: AbortSignal, describe: () => string): Promise<void> {
  if (ready()) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const waiter: Waiter = {
      ready,
      resolve: () => {
        signal.removeEventListener('abort', onAbort);
        resolve();
      },
    };
    const onAbort = (): void => {
      waiters.delete(waiter);
      reject(new Error(describe(), { cause: signal.reason }));
    };
    if (signal.aborted) return onAbort();
    waiters.add(waiter);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

class Ledger implements JobLedger {
  readonly #jobs = new Map<number, JobRecord>();
  /** Messages that belong to no job (unreadable). */
  readonly #problems: string[] = [];
  readonly #waiters = new Set<Waiter>();
  /** Markers published by `settled` and not read back yet. */
  readonly #markers = new Set<string>();
  #connection: ChannelModel | undefined;
  #channel: Channel | undefined;
  /** The connection was lost and not replaced (`reconnect`): messages after that were not read. */
  #disconnected = false;
  #closing = false;

  constructor(private readonly options: LedgerOptions) {}

  /** Declare the reporting objects on `uri` and consume both queues there. */
  async attach(uri: string): Promise<void> {
    const connection = await connect(uri, { clientProperties: { connection_name: 'mayfly-test-ledger' } });
    connection.on('error', () => undefined);
    try {
      const channel = await connection.createChannel();
      await declareReporting(channel, this.options);
      for (const queue of [STATE_QUEUE, LOG_QUEUE]) {
        await channel.consume(
          queue,
          (message) => {
            if (!message) return;
            this.#read(queue, message);
            channel.ack(message);
          },
          { exclusive: true },
        );
      }
      connection.on('close', () => {
        if (!this.#closing && this.#connection === connection) this.#disconnected = true;
      });
      [this.#connection, this.#channel, this.#disconnected] = [connection, channel, false];
    } catch (err) {
      await connection.close().catch(() => undefined);
      throw err;
    }
  }

  async reconnect(uri: string, signal: AbortSignal): Promise<void> {
    await this.#connection?.close().catch(() => undefined);
    for (;;) {
      try {
        return await this.attach(uri);
      } catch (err) {
        if (signal.aborted) throw new Error(`the ledger could not consume on ${uri}: ${errorMessage(err)}`, { cause: signal.reason });
        await abortableSleep(RECONNECT_PAUSE_MS, signal).catch(() => undefined);
      }
    }
  }

  untilFinished(jobIds: number[], signal: AbortSignal): Promise<void> {
    const finished = (id: number): boolean => this.states(id).some((state) => TERMINAL.has(state));
    const describe = (): string =>
      `jobs without a terminal state: ${jobIds
        .filter((id) => !finished(id))
        .map((id) => `${id} (${this.states(id).join(', ') || 'no state'})`)
        .join('; ')}${this.#disconnected ? ' (the ledger lost its broker connection: it read nothing after that)' : ''}`;
    return waitFor(this.#waiters, () => jobIds.every(finished), signal, describe).then(() => this.settled(signal));
  }

  untilLogged(jobId: number, text: string, signal: AbortSignal): Promise<void> {
    const runs = (): Run[] => [...(this.#jobs.get(jobId)?.runs.values() ?? [])];
    return waitFor(
      this.#waiters,
      () => runs().some((run) => run.logText.includes(text)),
      signal,
      () => `job ${jobId} did not log ${JSON.stringify(text)}; states seen: ${this.states(jobId).join(', ') || 'none'}`,
    );
  }

  /**
   * A marker is published to each queue and read back: both queues are FIFO
   * with this one consumer, so everything ahead of the markers (every part the
   * worker had confirmed before a state we saw) has been read by then.
   */
  async settled(signal: AbortSignal): Promise<void> {
    const channel = this.#channel;
    if (!channel) throw new Error('the ledger is not consuming');
    const ids = [STATE_QUEUE, LOG_QUEUE].map((queue) => {
      const id = randomUUID();
      this.#markers.add(id);
      channel.sendToQueue(queue, Buffer.from('{}'), { type: MARKER_TYPE, messageId: id });
      return id;
    });
    await waitFor(this.#waiters, () => ids.every((id) => !this.#markers.has(id)), signal, () => 'the ledger did not read its own markers back');
  }

  states(jobId: number): string[] {
    return [...(this.#jobs.get(jobId)?.states ?? [])];
  }

  log(jobId: number): string {
    return [...(this.#jobs.get(jobId)?.runs.values() ?? [])].at(-1)?.logText ?? '';
  }

  report(scenario: string, jobIds: number[], measured: Measured = {}): LedgerReport {
    const { vmsLeaked, deadline } = measured;
    const report: LedgerReport = {
      scenario,
      jobsRun: 0,
      jobsLost: 0,
      partsLost: 0,
      duplicateTerminalStates: 0,
      ...(vmsLeaked === undefined ? {} : { vmsLeaked }),
      ...(deadline === undefined ? {} : { requeuedBeforeDeadline: 0 }),
      problems: [...this.#problems],
    };
    if (this.#disconnected) report.problems.push('the ledger lost its broker connection: messages after that were not read');
    for (const jobId of jobIds) this.#check(jobId, report);
    if (vmsLeaked !== undefined && vmsLeaked > 0) {
      report.problems.push(`${vmsLeaked} VM(s) still live after the reaper's pass`);
    }
    if (deadline !== undefined) this.#checkDeadline(jobIds, deadline, report);
    const file = process.env.MAYFLY_FAULT_REPORT;
    if (file) appendFileSync(file, `${JSON.stringify(report)}\n`);
    return report;
  }

  async close(): Promise<void> {
    this.#closing = true;
    await this.#connection?.close().catch(() => undefined);
  }

  #checkDeadline(jobIds: number[], deadline: number, report: LedgerReport): void {
    for (const jobId of jobIds) {
      const first = this.#jobs.get(jobId)?.resetsReadAt[0];
      if (first !== undefined && first < deadline) {
        report.requeuedBeforeDeadline = (report.requeuedBeforeDeadline ?? 0) + 1;
      } else {
        const when = first === undefined ? 'never requeued' : `requeued ${first - deadline} ms after it`;
        report.problems.push(`job ${jobId} not requeued before the deadline (${new Date(deadline).toISOString()}): ${when}`);
      }
    }
  }

  #check(jobId: number, report: LedgerReport): void {
    const job = this.#jobs.get(jobId);
    if (!job || job.states.length === 0) {
      report.jobsLost += 1;
      report.problems.push(`job ${jobId} lost: no state update seen`);
      return;
    }
    report.jobsRun += 1;
    report.problems.push(...job.problems);
    const runs = [...job.runs.values()];
    const describeRuns = (): string => runs.map((run) => `run ${shortRun(run.uuid)}: ${run.states.join(', ') || 'no state'}`).join('; ');
    const terminals = runs.flatMap((run) => run.states.filter((state) => TERMINAL.has(state)));
    if (terminals.length > 1) {
      report.duplicateTerminalStates += terminals.length - 1;
      report.problems.push(`job ${jobId} reached ${terminals.length} terminal states (${describeRuns()})`);
    }
    if (!runs.some((run) => run.states.filter((state) => TERMINAL.has(state)).length === 1)) {
      report.jobsLost += 1;
      report.problems.push(`job ${jobId} lost: no run reached exactly one terminal state (${describeRuns()})`);
    }
    for (const run of runs) this.#checkLog(jobId, run, report);
  }

  /**
   * A finished run's parts must be 0..N with exactly one final part, N; any
   * other run (requeued, abandoned) may stop anywhere, but without a gap.
   */
  #checkLog(jobId: number, run: Run, report: LedgerReport): void {
    const finished = run.states.some((state) => TERMINAL.has(state));
    const what = `job ${jobId} run ${shortRun(run.uuid)} (${run.states.at(-1) ?? 'no state'})`;
    const numbers = [...run.parts.keys()].sort((a, b) => a - b);
    const finals = numbers.filter((number) => run.parts.get(number)?.final);
    const last = numbers.at(-1) ?? -1;
    if (finished) {
      if (finals.length !== 1 || finals[0] !== last) {
        report.problems.push(`${what}: expected one final part, the last (${last}); final parts: ${finals.join(', ') || 'none'}`);
      }
      if (finals.length === 0) report.partsLost += 1; // the final part itself
    }
    const missing: number[] = [];
    for (let number = 0; number < last; number++) if (!run.parts.has(number)) missing.push(number);
    if (missing.length > 0) {
      report.partsLost += missing.length;
      const shown = missing.slice(0, MISSING_SHOWN).join(', ');
      report.problems.push(`${what}: ${missing.length} log part(s) missing below ${last}: ${shown}${missing.length > MISSING_SHOWN ? ', ...' : ''}`);
    }
  }

  #job(jobId: number): JobRecord {
    let job = this.#jobs.get(jobId);
    if (!job) {
      job = { runs: new Map(), resetsReadAt: [], states: [], stateKeys: new Set(), problems: [] };
      this.#jobs.set(jobId, job);
    }
    return job;
  }

  #run(job: JobRecord, uuid: string): Run {
    let run = job.runs.get(uuid);
    if (!run) {
      run = { uuid, states: [], parts: new Map(), logText: '' };
      job.runs.set(uuid, run);
    }
    return run;
  }

  #read(queue: string, message: ConsumeMessage): void {
    if (message.properties.type === MARKER_TYPE) {
      this.#markers.delete(String(message.properties.messageId));
    } else {
      const text = message.content.toString('utf8');
      const body = parseObject(text);
      if (!body || typeof body.id !== 'number') {
        this.#problems.push(`unreadable message on ${queue}: ${JSON.stringify(text.slice(0, 200))}`);
      } else if (queue === STATE_QUEUE) {
        this.#readState(body.id, body, text);
      } else {
        this.#readPart(body.id, body, text);
      }
    }
    for (const waiter of [...this.#waiters]) {
      if (!waiter.ready()) continue;
      this.#waiters.delete(waiter);
      waiter.resolve();
    }
  }

  #readState(jobId: number, body: Record<string, unknown>, text: string): void {
    const job = this.#job(jobId);
    const meta = (typeof body.meta === 'object' && body.meta !== null ? body.meta : {}) as Record<string, unknown>;
    const { state } = body;
    const uuid = typeof meta.uuid === 'string' ? meta.uuid : '';
    if (typeof state !== 'string' || typeof meta.state_update_count !== 'number') {
      job.problems.push(`job ${jobId}: state update without state or state_update_count: ${text.slice(0, 200)}`);
      return;
    }
    const key = `${meta.state_update_count}|${state}|${uuid}`;
    if (job.stateKeys.has(key)) return;
    job.stateKeys.add(key);
    job.states.push(state);
    this.#run(job, uuid).states.push(state);
    if (state === 'reset') job.resetsReadAt.push(Date.now());
    if (state === 'reset' && this.options.onReset) {
      this.options.onReset(jobId).catch((err: unknown) => job.problems.push(`job ${jobId}: could not requeue it after reset: ${String(err)}`));
    }
  }

  #readPart(jobId: number, body: Record<string, unknown>, text: string): void {
    const job = this.#job(jobId);
    const { number, log, final, uuid } = body;
    if (typeof number !== 'number' || typeof log !== 'string' || typeof final !== 'boolean') {
      job.problems.push(`job ${jobId}: log part without number, log or final: ${text.slice(0, 200)}`);
      return;
    }
    const run = this.#run(job, typeof uuid === 'string' ? uuid : '');
    const earlier = run.parts.get(number);
    if (earlier) {
      if (earlier.text !== text) job.problems.push(`job ${jobId} run ${shortRun(run.uuid)}: log part ${number} came twice with different bodies`);
      return;
    }
    run.parts.set(number, { text, log, final });
    run.logText += log;
  }
}

/**
 * Consume `reporting.jobs.builds` and `reporting.jobs.logs` on the vhost
 * `uri` (asserted as the worker declares them, so the ledger may start
 * first) until `close`, recording every message.
 */
export async function startLedger(uri: string, options: LedgerOptions = {}): Promise<JobLedger> {
  const ledger = new Ledger(options);
  await ledger.attach(uri);
  return ledger;
}

/** Declare `reporting`, its state and log queues and the binding as the worker does (on a cluster, the node of `channel` leads new quorum queues). */
export async function declareReporting(channel: Channel, options: Pick<LedgerOptions, 'quorum'>): Promise<void> {
  await channel.assertExchange(REPORTING_EXCHANGE, 'topic', DURABLE_EXCHANGE);
  const queue = options.quorum === true ? { ...DURABLE_QUEUE, arguments: { 'x-queue-type': 'quorum' } } : DURABLE_QUEUE;
  await channel.assertQueue(STATE_QUEUE, queue);
  await channel.assertQueue(LOG_QUEUE, queue);
  await channel.bindQueue(LOG_QUEUE, REPORTING_EXCHANGE, LOG_QUEUE);
}
