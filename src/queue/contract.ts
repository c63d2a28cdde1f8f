/**
 * Where jobs come from and where their states and logs go: one contract
 * for the `amqp` queue (docs/protocol.md) and the `file` queue (the embedded
 * default). The processor pool and the job pipeline see only these types;
 * src/queue/create.ts picks the implementation, and
 * test/conformance/queue-conformance.ts checks each against this contract.
 */
import type { JobPayload } from '../job/payload.js';

/** The states of the wire protocol (docs/protocol.md), in the order a run passes through them. */
export type JobState = 'received' | 'started' | 'passed' | 'failed' | 'errored' | 'cancelled' | 'reset';
export type TerminalState = 'passed' | 'failed' | 'errored' | 'cancelled';

/** Sent with the first log part after `started` (docs/protocol.md, "Log parts"). */
export interface LogPartMeta {
  /** `job.queued_at` as the payload gave it; null when it had none (travis sends every key). */
  queued_at: string | null;
  repo: string;
  /** The payload's `queue`, empty when it had none. */
  queue: string;
  infra: string;
}

/** One numbered piece of a job's log, exactly as it goes on the wire. */
export interface LogPart {
  /** 0, 1, 2, ... per run of the job. */
  number: number;
  /** Log text; at most `LOG_PART_MAX_BYTES` bytes of UTF-8, never a split sequence. */
  content: string;
  /** True on the last part only, which has empty `content`. */
  final: boolean;
  meta?: LogPartMeta;
}

/**
 * Where one job's log parts go. `publish` resolves once the part is accepted
 * for delivery (the sink may pipeline); it waits when too many are in flight,
 * which is how a slow broker slows down the reading of the script's output.
 */
export interface LogSink {
  publish(part: LogPart): Promise<void>;
  /** Resolves when every part published so far is safely delivered (e.g. confirmed by the broker). */
  flushed(): Promise<void>;
  /**
   * Aborts, with the reason, when parts can no longer be delivered (a
   * broker away longer than the delivery timeout): the job stops and is
   * requeued. Sinks that cannot fail that way leave it out.
   */
  readonly failed?: AbortSignal;
}

/** Timestamps a job's state updates carry once they are known. */
export interface JobTimes {
  receivedAt?: Date;
  startedAt?: Date;
  finishedAt?: Date;
}

/**
 * One delivery of one job, from receipt to acknowledgement. Each state is
 * reported at most once, in order, and exactly one of `finish` or `requeue`
 * ends every job. The delivery is acknowledged separately, last: after the
 * instance is destroyed, so a worker that dies before that leaves the job
 * to be redelivered, and the redelivered run's lower `state_update_count`
 * tells consumers its updates are stale.
 */
export interface QueuedJob {
  readonly payload: JobPayload;
  /** Publish `received`. */
  received(): Promise<void>;
  /**
   * Publish `started`; `instanceId` goes into the state's meta. `vmSize`,
   * when given, replaces the payload's `vm_size` in this and later updates
   * (the backend's `Instance.vmSize`).
   */
  started(instanceId: string, vmSize?: string): Promise<void>;
  /** Publish the terminal state (confirmed by the broker before it resolves). */
  finish(state: TerminalState): Promise<void>;
  /** Publish `reset` (run it again elsewhere), confirmed. */
  requeue(): Promise<void>;
  /** Acknowledge the delivery: the job is done with, whatever its outcome. */
  acknowledge(): Promise<void>;
  /** Where this job's log parts go. */
  readonly log: LogSink;
  /**
   * Aborts when the delivery can no longer be acknowledged (its channel or
   * connection is gone): the broker will redeliver it, so this run must stop.
   */
  readonly lost: AbortSignal;
}

/** A command from `worker.commands`, validated. */
export interface CancelCommand {
  jobId: number;
  reason: string;
  source: string;
}

/**
 * The jobs one processor takes, one at a time. A delivery that can't be a
 * job at all (not JSON, no `job.id`) is rejected inside the source and never
 * returned: `next` just waits for the following one.
 */
export interface JobSource {
  /** The next job, or undefined once the source is closed or `signal` aborts. */
  next(signal: AbortSignal): Promise<QueuedJob | undefined>;
  /** Stop taking jobs; a job already returned can still be finished. */
  close(): Promise<void>;
}

export interface JobQueue {
  /** The queue type's name (`amqp`, `file`). */
  readonly name: string;
  /** Declare/prepare what the queue needs; called once before anything else. */
  open(): Promise<void>;
  /** A source for one processor (its own channel and prefetch on AMQP). */
  openSource(processorId: string): Promise<JobSource>;
  /** Cancel commands as they arrive; queue types without commands never call it. */
  onCancel(listener: (command: CancelCommand) => void): void;
  /** Why jobs can't flow now (e.g. the broker is away and being reconnected to), or undefined when they can: `/ready` says it. */
  notReadyReason(): string | undefined;
  /** The broker node each connection uses now, by role (`jobs`, `logs`), URIs with passwords masked; queues without a broker have none. */
  brokerNodes?(): Readonly<Record<string, string>>;
  /** Called with `notReadyReason()` each time it changes between "ready" and "not"; queues that are always ready never call it. */
  onReadinessChange(listener: (notReadyReason: string | undefined) => void): void;
  /**
   * Jobs waiting in the queue, ready to be taken (not the ones delivered to
   * a worker): the demand an autoscaler reads. Rejects when it can't be
   * known now (the broker is away).
   */
  readyJobs(): Promise<number>;
  /** Close every connection, after the sources are closed and jobs settled. */
  close(): Promise<void>;
}
