/**
 * The messages the worker publishes, byte for byte as travis-ci/worker
 * sends them (docs/protocol.md, "State updates" and "Log parts").
 */
import type { Options } from 'amqplib';
import type { JobState, LogPart } from '../contract.js';

/** Broker objects named by the protocol. */
export const REPORTING_EXCHANGE = 'reporting';
export const STATE_QUEUE = 'reporting.jobs.builds';
export const LOG_QUEUE = 'reporting.jobs.logs';
export const SHARDED_LOG_EXCHANGE = 'reporting.jobs.logs_sharded';
export const COMMANDS_EXCHANGE = 'worker.commands';

/** The AMQP `type` property of a state update. */
export const STATE_EVENT: Record<JobState, string> = {
  received: 'job:test:receive',
  started: 'job:test:start',
  passed: 'job:test:finish',
  failed: 'job:test:finish',
  errored: 'job:test:finish',
  cancelled: 'job:test:finish',
  reset: 'job:test:reset',
};
export const LOG_EVENT = 'job:test:log';

/** RFC 3339 in UTC without fractional seconds (`2018-05-14T14:26:50Z`), as Go's `time.RFC3339` prints. */
export function rfc3339(date: Date): string {
  return date.toISOString().replace(/\.\d+Z$/, 'Z');
}

/** Properties of every published message: JSON, persistent, stamped (seconds), typed. */
export function publishOptions(type: string, now: Date = new Date()): Options.Publish {
  return {
    contentType: 'application/json',
    deliveryMode: 2,
    timestamp: Math.floor(now.getTime() / 1000),
    type,
  };
}

export interface StateUpdate {
  jobId: number;
  state: JobState;
  /** `meta.state_update_count` of this update. */
  count: number;
  instanceId?: string;
  uuid?: string;
  /** The payload's `vm_size`, or what the backend made of it once started; travis echoes it in every state update. */
  vmSize?: string;
  queuedAt?: Date;
  receivedAt?: Date;
  startedAt?: Date;
  finishedAt?: Date;
  trace: boolean;
}

export function stateUpdateBody(update: StateUpdate): Buffer {
  const meta: Record<string, unknown> = { state_update_count: update.count };
  if (update.instanceId !== undefined) meta.instance_id = update.instanceId;
  if (update.uuid !== undefined) meta.uuid = update.uuid;
  const body: Record<string, unknown> = { id: update.jobId, state: update.state, meta };
  if (update.vmSize) body.vm_size = update.vmSize;
  if (update.queuedAt) body.queued_at = rfc3339(update.queuedAt);
  if (update.receivedAt) body.received_at = rfc3339(update.receivedAt);
  if (update.startedAt) body.started_at = rfc3339(update.startedAt);
  if (update.finishedAt) body.finished_at = rfc3339(update.finishedAt);
  if (update.trace) body.trace = true;
  return Buffer.from(JSON.stringify(body));
}

/** A log part in travis's key order: id, log, number, uuid, final, then meta when present. */
export function logPartBody(jobId: number, uuid: string, part: LogPart): Buffer {
  const body: Record<string, unknown> = {
    id: jobId,
    log: part.content,
    number: part.number,
    uuid,
    final: part.final,
  };
  if (part.meta) body.meta = part.meta;
  return Buffer.from(JSON.stringify(body));
}
