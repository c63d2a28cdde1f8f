/**
 * Broker failures, and how to recognise the ones an operator must act on.
 *
 * `BrokerError` stands in for a class src/errors.ts does not have yet (see
 * the report of the amqp queue): it keeps the same shape as `MayflyError`
 * (`code`, `cause`, `requeue`) so callers can treat both alike.
 */

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
  /** The job was already reported, acknowledged or lost: a programming error of the caller. */
  | 'settled';

export class BrokerError extends Error {
  readonly code = 'E_BROKER';
  /**
   * The infrastructure failed, not the job: run it again (`reset`). A job
   * whose delivery is lost is redelivered by the broker anyway; the
   * pipeline sees that through `QueuedJob.lost`, not through this flag.
   */
  readonly requeue = true;

  constructor(
    message: string,
    readonly kind: BrokerErrorKind,
    options: { cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'BrokerError';
  }
}

/** AMQP reply codes amqplib puts in `err.code` when the server closes a channel or connection. */
const PRECONDITION_FAILED = 406;
const COMMAND_INVALID = 503;

function replyCode(err: unknown): unknown {
  return typeof err === 'object' && err !== null ? (err as { code?: unknown }).code : undefined;
}

/**
 * RabbitMQ >= 3.8.15 closes a channel with 406 PRECONDITION_FAILED, text
 * "delivery acknowledgement on channel N timed out", when a delivery stays
 * unacknowledged longer than `consumer_timeout`.
 */
export function isConsumerTimeout(err: unknown): boolean {
  return (
    replyCode(err) === PRECONDITION_FAILED &&
    err instanceof Error &&
    /delivery acknowledgement on channel \d+ timed out/i.test(err.message)
  );
}

/** What the worker log says when `isConsumerTimeout`: the words an operator can act on. */
export const CONSUMER_TIMEOUT_ADVICE =
  "the job ran longer than the broker's consumer_timeout, so RabbitMQ closed its channel and will hand the job out again; " +
  'raise consumer_timeout in rabbitmq.conf (milliseconds) above TRAVIS_WORKER_HARD_TIMEOUT plus the startup and script upload timeouts';

/** An exchange declare refused because the broker has no such exchange type (a plugin is not enabled). */
export function isUnknownExchangeType(err: unknown): boolean {
  return replyCode(err) === COMMAND_INVALID && err instanceof Error && /exchange type/i.test(err.message);
}
