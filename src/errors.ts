/**
 * Every error mayfly raises on purpose. Each has a stable `code` (for logs,
 * metrics and tests) and says whether the job it happened to should be
 * requeued (`reset`: the infrastructure failed, not the job) or ended.
 */

export type ErrorCode =
  | 'E_CONFIG'
  | 'E_HOST_METADATA'
  | 'E_PAYLOAD_INVALID'
  | 'E_PAYLOAD_FILTER'
  | 'E_SCRIPT_REJECTED'
  | 'E_SCRIPT_UNAVAILABLE'
  | 'E_SCRIPT_TOO_LARGE'
  | 'E_INSTANCE_START'
  | 'E_STARTUP_TIMEOUT'
  | 'E_SSH_UNREACHABLE'
  | 'E_UPLOAD'
  | 'E_UPLOAD_TIMEOUT'
  | 'E_STALE_VM'
  | 'E_CONNECTION_LOST'
  | 'E_NO_CAPACITY'
  | 'E_BROKER';

export interface MayflyErrorOptions {
  cause?: unknown;
  /** Text for the job's log, shown to the user; internal detail stays in `message`. */
  userMessage?: string;
}

export abstract class MayflyError extends Error {
  abstract readonly code: ErrorCode;
  /** True when the job should run again elsewhere (publish `reset`). */
  abstract readonly requeue: boolean;
  readonly userMessage: string | undefined;

  constructor(message: string, options: MayflyErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.userMessage = options.userMessage;
  }
}

/** A setting is missing, unknown or has a bad value; startup stops. */
export class ConfigError extends MayflyError {
  readonly code = 'E_CONFIG';
  readonly requeue = false;
}

/** A job payload that can't be run as it is; names the offending field. */
export class PayloadError extends MayflyError {
  readonly code = 'E_PAYLOAD_INVALID';
  readonly requeue = false;
  constructor(
    readonly field: string,
    problem: string,
  ) {
    super(`invalid job payload: ${field}: ${problem}`);
  }
}

/**
 * `TRAVIS_WORKER_PAYLOAD_FILTER_EXECUTABLE` failed on this payload (could
 * not start, exited non-zero, timed out, printed no JSON object). The job
 * is errored, not requeued: the same filter would fail on the same payload
 * on any worker, and running the job unfiltered could send the build API
 * what the filter exists to keep from it.
 */
export class PayloadFilterError extends MayflyError {
  readonly code = 'E_PAYLOAD_FILTER';
  readonly requeue = false;
}

/** The build API refused the job (4xx): running it again would not help. */
export class ScriptRejectedError extends MayflyError {
  readonly code = 'E_SCRIPT_REJECTED';
  readonly requeue = false;
}

/** The build API could not be reached or kept failing (network, 5xx). */
export class ScriptUnavailableError extends MayflyError {
  readonly code = 'E_SCRIPT_UNAVAILABLE';
  readonly requeue = true;
}

/**
 * The build script is larger than a worker takes (`MAX_SCRIPT_BYTES`): it
 * would be as large on every worker, so running the job again can't help.
 */
export class ScriptTooLargeError extends MayflyError {
  readonly code = 'E_SCRIPT_TOO_LARGE';
  readonly requeue = false;
}

/** The backend could not start an instance. */
export class InstanceStartError extends MayflyError {
  readonly code = 'E_INSTANCE_START';
  readonly requeue = true;
}

/** The backend has no room for another instance right now (quota, capacity, no free host). */
export class NoCapacityError extends MayflyError {
  readonly code = 'E_NO_CAPACITY';
  readonly requeue = true;
}

/** The instance was not ready within `TRAVIS_WORKER_STARTUP_TIMEOUT`. */
export class StartupTimeoutError extends MayflyError {
  readonly code = 'E_STARTUP_TIMEOUT';
  readonly requeue = true;
}

/** SSH never accepted a connection. */
export class SshUnreachableError extends MayflyError {
  readonly code = 'E_SSH_UNREACHABLE';
  readonly requeue = true;
}

/** The script could not be uploaded. */
export class UploadError extends MayflyError {
  readonly code = 'E_UPLOAD';
  readonly requeue = true;
}

/** The upload did not finish within `TRAVIS_WORKER_SCRIPT_UPLOAD_TIMEOUT`. */
export class UploadTimeoutError extends MayflyError {
  readonly code = 'E_UPLOAD_TIMEOUT';
  readonly requeue = true;
}

/** The instance already had a build script: it ran a job before and must not run another. */
export class StaleVmError extends MayflyError {
  readonly code = 'E_STALE_VM';
  readonly requeue = true;
}

/** The connection to the instance dropped while the script ran; its outcome is unknown. */
export class ConnectionLostError extends MayflyError {
  readonly code = 'E_CONNECTION_LOST';
  readonly requeue = true;
}

/** What went wrong between the worker and the broker. */
export type BrokerErrorKind =
  /** A channel or connection closed while something still needed it. */
  | 'closed'
  /** The broker refused a published message (basic.nack). */
  | 'nacked'
  /** The broker closed the job's channel because the delivery stayed unacknowledged past `consumer_timeout`. */
  | 'consumer-timeout'
  /** The broker cancelled the job consumer (the queue was deleted, or the node went down). */
  | 'consumer-cancelled'
  /** A log part stayed unconfirmed past `TRAVIS_WORKER_LOG_DELIVERY_TIMEOUT`, retries included. */
  | 'undeliverable'
  /** The job was already reported, acknowledged or lost: a programming error of the caller. */
  | 'settled';

/**
 * The broker connection or a channel failed. The infrastructure failed, not
 * the job: run it again. (A job whose delivery is lost is redelivered by the
 * broker anyway; the pipeline sees that through `QueuedJob.lost`.)
 */
export class BrokerError extends MayflyError {
  readonly code = 'E_BROKER';
  readonly requeue = true;

  constructor(
    message: string,
    readonly kind: BrokerErrorKind,
    options: MayflyErrorOptions = {},
  ) {
    super(message, options);
  }
}

export function isMayflyError(err: unknown): err is MayflyError {
  return err instanceof MayflyError;
}

/** The message of any thrown value, for log lines. */
export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * The host's metadata service (EC2 IMDS, GCE's metadata server) failed or
 * answered something it never sends. Logged and retried: such an answer is
 * never taken for a notice, so it never drains the worker.
 */
export class HostMetadataError extends MayflyError {
  readonly code = 'E_HOST_METADATA';
  readonly requeue = false;
}
