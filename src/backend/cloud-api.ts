/**
 * The one way a cloud backend calls its API: rate limited per backend
 * (travis' `RATE_LIMIT_MAX_CALLS` per `RATE_LIMIT_DURATION`), retried with
 * exponential backoff and full jitter on throttling, 5xx and transient
 * network errors (and, a few times only, on garbled answers), abortable,
 * and counted in metrics by operation and outcome.
 * Quota and capacity errors are not retried here: the job is requeued
 * (another worker or a later try may have room), and the error says which.
 */
import { raceAbort } from '../util/abort.js';
import pRetry, { AbortError } from 'p-retry';
import pThrottle from 'p-throttle';
import { errorMessage } from '../errors.js';
import type { Logger } from '../logger.js';
import type { BackendMetrics } from './contract.js';
import { MalformedAnswerError } from './malformed-answer.js';

/** What a failed call means; each backend classifies its SDK's errors into these. */
export type CloudErrorKind =
  /** Rate limited by the API (429, RequestLimitExceeded, rateLimitExceeded): retry later. */
  | 'throttled'
  /** 5xx, connection reset, timeout: retry. */
  | 'transient'
  /**
   * A success status whose body is not the API's whole answer (a proxy's
   * error page, an answer cut short, an empty body; see malformed-answer.ts):
   * retried `MALFORMED_RETRIES` times, as the next answer may come whole.
   */
  | 'malformed'
  /** Quota exhausted: no retry here, requeue the job. */
  | 'quota'
  /** The zone/region has no capacity for this machine type: try elsewhere, or requeue. */
  | 'capacity'
  /** The resource does not exist (deleting what is gone is success for a destroy). */
  | 'not-found'
  /** Anything else: a bad request, bad credentials; retrying won't help. */
  | 'fatal';

export interface CloudApiOptions {
  /** Backend name, for logs. */
  backend: string;
  /** At most this many calls per `intervalMs` (0 = no limit). */
  maxCalls: number;
  intervalMs: number;
  /** What a failure of the SDK means; an answer the backend found malformed (`MalformedAnswerError`) says so itself. */
  classify(err: unknown): CloudErrorKind;
  metrics: BackendMetrics;
  logger: Logger;
  /** Retries after the first attempt; default 8 (with the delays below, about two minutes at most). */
  retries?: number;
  /** First retry delay; it doubles each time, with full jitter. Default 500 ms. */
  minDelayMs?: number;
  /** Longest single delay. Default 30 s. */
  maxDelayMs?: number;
}

/** A call that failed for good, with what kind of failure it was. */
export class CloudCallError extends Error {
  constructor(
    readonly operation: string,
    readonly kind: CloudErrorKind,
    cause: unknown,
  ) {
    super(`${operation} failed (${kind}): ${errorMessage(cause)}`, { cause });
    this.name = 'CloudCallError';
  }
}

const RETRIED: ReadonlySet<CloudErrorKind> = new Set(['throttled', 'transient', 'malformed']);
/**
 * Retries of a call answered with garbage. One garbled answer is a blip
 * (a proxy restarting, a connection cut mid-body); a proxy that keeps
 * answering with its own page keeps doing so, and holding the job through
 * the full 5xx backoff (about two minutes) would only delay its requeue.
 */
export const MALFORMED_RETRIES = 2;


export class CloudApi {
  private readonly slot: () => Promise<void>;

  constructor(private readonly options: CloudApiOptions) {
    const throttle =
      options.maxCalls > 0 ? pThrottle({ limit: options.maxCalls, interval: options.intervalMs }) : undefined;
    this.slot = throttle ? throttle(async () => {}) : async () => {};
  }

  /**
   * Call `operation` (an API method name, e.g. `instances.insert`) through
   * `fn`, which gets the signal to pass to the SDK. Throws the signal's
   * reason when it aborts, else a `CloudCallError` naming the kind of failure.
   */
  async call<T>(operation: string, fn: (signal: AbortSignal) => Promise<T>, signal: AbortSignal): Promise<T> {
    const { classify, metrics, logger } = this.options;
    let malformed = 0;
    try {
      return await pRetry(
        async () => {
          await raceAbort(this.slot(), signal);
          const started = Date.now();
          try {
            const result = await fn(signal);
            metrics.apiCall(operation, 'ok', Date.now() - started);
            return result;
          } catch (err) {
            if (signal.aborted) throw new AbortError(signal.reason as Error);
            const kind = err instanceof MalformedAnswerError ? err.kind : classify(err);
            metrics.apiCall(operation, kind === 'throttled' ? 'throttled' : 'error', Date.now() - started);
            const failure = new CloudCallError(operation, kind, err);
            if (!RETRIED.has(kind) || (kind === 'malformed' && ++malformed > MALFORMED_RETRIES)) throw new AbortError(failure);
            throw failure;
          }
        },
        {
          retries: this.options.retries ?? 8,
          minTimeout: this.options.minDelayMs ?? 500,
          maxTimeout: this.options.maxDelayMs ?? 30_000,
          factor: 2,
          randomize: true,
          signal,
          onFailedAttempt: (error) => {
            logger.warn(
              { backend: this.options.backend, operation, attempt: error.attemptNumber, retries_left: error.retriesLeft, err: error.message },
              'cloud API call failed, retrying',
            );
          },
        },
      );
    } catch (err) {
      if (signal.aborted) throw signal.reason;
      throw err;
    }
  }
}
