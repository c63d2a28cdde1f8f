/**
 * `TRAVIS_WORKER_HEARTBEAT_URL`: a supervisor's say on whether this worker
 * should run. Polled at once and then every 5 minutes (travis' interval)
 * with `Authorization: token <TRAVIS_WORKER_HEARTBEAT_URL_AUTH_TOKEN>`, or
 * without a token, basic auth from the URL's `user:password@` (as Go's HTTP
 * client sends it for travis); an answer of `{"state":"down"}` drains the
 * worker. A failed poll is logged
 * and retried sooner; it never drains (an unreachable supervisor must not
 * take a fleet down).
 */
import { z } from 'zod';
import { errorMessage } from '../errors.js';
import type { Logger } from '../logger.js';
import { maskUrl } from '../redact.js';
import { abortableSleep } from '../util/abort.js';

/** travis polls every 5 minutes after a good answer... */
export const HEARTBEAT_INTERVAL_MS = 5 * 60_000;
/** ...and 30 seconds after a failed one. */
export const HEARTBEAT_ERROR_INTERVAL_MS = 30_000;
/** One poll may take this long before it counts as failed. */
const HEARTBEAT_REQUEST_TIMEOUT_MS = 10_000;

const HeartbeatAnswer = z.object({ state: z.string().optional() });

export interface HeartbeatOptions {
  url: string;
  authToken?: string;
  logger: Logger;
  /** Called when the supervisor answers `down`. */
  onDown: () => void;
  /** Stops the polling. */
  signal: AbortSignal;
  intervalMs?: number;
  errorIntervalMs?: number;
}

/**
 * The URL to fetch and its Authorization header. fetch refuses a URL with
 * credentials (and its error repeats the URL, password included), so they
 * leave the URL and become basic auth; an explicit token wins over them, as
 * an explicit header wins over the URL's user in Go's client.
 */
export function heartbeatRequest(url: string, authToken: string | undefined): { url: string; headers: Record<string, string> } {
  const parsed = new URL(url);
  const basic = `${decodeURIComponent(parsed.username)}:${decodeURIComponent(parsed.password)}`;
  const hasCredentials = parsed.username !== '' || parsed.password !== '';
  parsed.username = '';
  parsed.password = '';
  if (authToken !== undefined) return { url: parsed.href, headers: { authorization: `token ${authToken}` } };
  if (hasCredentials) return { url: parsed.href, headers: { authorization: `Basic ${Buffer.from(basic).toString('base64')}` } };
  return { url: parsed.href, headers: {} };
}

/** One poll: the state the supervisor answered (`up`, `down`, ...), or undefined if it said none. Throws on failure. */
export async function pollHeartbeat(url: string, authToken: string | undefined, signal: AbortSignal): Promise<string | undefined> {
  const request = heartbeatRequest(url, authToken);
  const response = await fetch(request.url, {
    headers: request.headers,
    signal: AbortSignal.any([signal, AbortSignal.timeout(HEARTBEAT_REQUEST_TIMEOUT_MS)]),
  });
  if (response.status > 299) {
    await response.body?.cancel();
    throw new Error(`unhappy status code ${response.status}`);
  }
  return HeartbeatAnswer.parse(await response.json()).state;
}

/** Poll until `signal` aborts or the supervisor says `down` (then `onDown` runs and polling ends). */
export async function watchHeartbeat(options: HeartbeatOptions): Promise<void> {
  const { url, authToken, logger, signal } = options;
  const masked = maskUrl(url);
  logger.info({ heartbeat_url: masked }, 'starting heartbeat loop');
  while (!signal.aborted) {
    let wait = options.intervalMs ?? HEARTBEAT_INTERVAL_MS;
    try {
      const state = await pollHeartbeat(url, authToken, signal);
      if (state === 'down') {
        logger.info({ heartbeat_state: state }, 'the heartbeat URL says down: draining');
        options.onDown();
        return;
      }
    } catch (err) {
      if (signal.aborted) return;
      logger.warn({ heartbeat_url: masked, err: errorMessage(err) }, 'failed to get heartbeat');
      wait = options.errorIntervalMs ?? HEARTBEAT_ERROR_INTERVAL_MS;
    }
    await abortableSleep(wait, signal).catch(() => undefined);
  }
}
