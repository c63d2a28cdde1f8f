/**
 * Broker failures (`BrokerError`, re-exported from src/errors.ts), and how to
 * recognise the ones an operator must act on.
 */

export { BrokerError, type BrokerErrorKind } from '../../errors.js';

/** AMQP reply codes amqplib puts in `err.code` when the server closes a channel or connection. */
const NOT_FOUND = 404;
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

/** A passive declare of a queue that does not exist. */
export function isNotFound(err: unknown): boolean {
  return replyCode(err) === NOT_FOUND;
}

/** A declare whose attributes clash with the existing object's (e.g. a classic queue declared as quorum). */
export function isPreconditionFailed(err: unknown): boolean {
  return replyCode(err) === PRECONDITION_FAILED;
}
