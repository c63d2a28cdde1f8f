/**
 * Ending instances for good. A TerminateInstances that answers "ok" is not
 * trusted on its own: the instance's state is read back until EC2 says
 * `shutting-down` or `terminated`, and the request is sent again if it
 * does not (a lost termination). Also finds instances whose RunInstances
 * answer never arrived, by their client token.
 */
import type { RunInstancesRequest } from '@aws-sdk/client-ec2';
import { CloudCallError, MalformedAnswerError, errorMessage, abortableSleep, type Logger } from '../../src/backend/kit.js';
import type { Ec2Api, Ec2InstanceDescription } from './api.js';

/** Terminate requests per instance before giving up (the caller, `destroyInstance`, tries the whole thing again). */
export const TERMINATE_ATTEMPTS = 3;
/** State checks after each terminate request before sending it again. */
export const TERMINATE_VERIFY_POLLS = 5;
/**
 * DescribeInstances may not list an instance for a few seconds after it was
 * launched (EC2's eventual consistency): look for a lost launch this many
 * times, `pollMs` apart, before replaying it.
 */
export const LOST_LAUNCH_LOOKUPS = 3;

/**
 * How long after its launch an instance EC2 says it does not know may still
 * exist. EC2's eventual-consistency page: right after RunInstances,
 * `InvalidInstanceID.NotFound` "does not mean the instance was or will be
 * terminated", and callers should back off "up to a few minutes".
 */
export const NOT_VISIBLE_WINDOW_MS = 5 * 60_000;
/** The longest pause between two terminations of an instance EC2 does not show yet (the same page: back off to a few minutes in all). */
const NOT_VISIBLE_MAX_BACKOFF_MS = 30_000;

/** States from which an instance can't come back: nothing more to do. */
const GONE: ReadonlySet<string> = new Set(['shutting-down', 'terminated']);

export interface TerminateOptions {
  api: Ec2Api;
  /** Pause between state checks, in ms. */
  pollMs: number;
  logger: Logger;
  signal: AbortSignal;
  /**
   * When the instance was launched (ms since the epoch), for an instance this
   * worker launched. Within `NOT_VISIBLE_WINDOW_MS` of it, NotFound means
   * "not visible yet" and the termination is sent again with backoff; after
   * it, the instance is reported as never seen. Leave it out for an
   * instance DescribeInstances listed: it was visible, so NotFound means gone.
   */
  launchedAt?: number;
}

const isNotFound = (err: unknown): boolean => err instanceof CloudCallError && err.kind === 'not-found';

/** Whether EC2 may still not show an instance launched at `launchedAt`. */
const mayBeInvisible = (launchedAt: number | undefined): boolean => launchedAt !== undefined && Date.now() - launchedAt < NOT_VISIBLE_WINDOW_MS;

/** The instance's state; one EC2 does not know is `terminated`, or `unknown` while it may just not be visible yet. */
async function stateOf(api: Ec2Api, id: string, launchedAt: number | undefined, signal: AbortSignal): Promise<string> {
  try {
    const [found] = await api.describeInstances({ ids: [id] }, signal);
    return found?.State?.Name ?? 'terminated';
  } catch (err) {
    if (isNotFound(err)) return mayBeInvisible(launchedAt) ? 'unknown' : 'terminated';
    throw err;
  }
}

/**
 * Send TerminateInstances until EC2 knows the instance. Returns false when
 * NotFound means the instance is gone (one that was listed, so visible).
 */
async function requestTermination(id: string, { api, pollMs, logger, signal, launchedAt }: TerminateOptions): Promise<boolean> {
  for (let backoffMs = pollMs; ; backoffMs = Math.min(backoffMs * 2, NOT_VISIBLE_MAX_BACKOFF_MS)) {
    try {
      await api.terminateInstances([id], signal);
      return true;
    } catch (err) {
      if (!isNotFound(err)) throw err;
      if (launchedAt === undefined) return false;
      if (!mayBeInvisible(launchedAt)) {
        throw new Error(`EC2 still does not know instance ${id} ${NOT_VISIBLE_WINDOW_MS / 60_000} minutes after its launch: it may be running`, { cause: err });
      }
      logger.info({ instance: id, retry_in_ms: backoffMs }, 'EC2 does not show the just-launched instance yet; terminating it again');
      await abortableSleep(backoffMs, signal);
    }
  }
}

/** Terminate `id` and wait until EC2 says it is going; throws if it keeps running. */
export async function terminateInstance(id: string, options: TerminateOptions): Promise<void> {
  const { api, pollMs, logger, signal, launchedAt } = options;
  let state = 'unknown';
  for (let attempt = 1; attempt <= TERMINATE_ATTEMPTS; attempt++) {
    if (!(await requestTermination(id, options))) return;
    for (let poll = 0; poll < TERMINATE_VERIFY_POLLS; poll++) {
      state = await stateOf(api, id, launchedAt, signal);
      if (GONE.has(state)) return;
      await abortableSleep(pollMs, signal);
    }
    logger.warn({ instance: id, state, attempt }, 'instance still not terminating after TerminateInstances; asking again');
  }
  throw new Error(`instance ${id} is still ${state} after ${TERMINATE_ATTEMPTS} termination requests`);
}

/** When EC2 says `instance` was launched, in ms since the epoch (now, if it does not say). */
export const launchTimeOf = (instance: Ec2InstanceDescription): number => instance.LaunchTime?.getTime() ?? Date.now();

/** Every instance (not already gone) launched with `clientToken`. */
async function launchedWith(api: Ec2Api, clientToken: string, signal: AbortSignal): Promise<Ec2InstanceDescription[]> {
  const found = await api.describeInstances({ filters: [{ Name: 'client-token', Values: [clientToken] }] }, signal);
  return found.filter((instance) => !GONE.has(instance.State?.Name ?? ''));
}

/**
 * A RunInstances was sent but its answer never came (aborted, or failed in a
 * way that leaves the outcome unknown): find what it launched by its client
 * token and terminate it. If DescribeInstances shows nothing, the request
 * is replayed with the same token: EC2 then answers with the instance it
 * launched, or launches it now, and either way it is terminated at once.
 * Never throws; says in the log what it could not do.
 */
export async function terminateLostLaunch(request: RunInstancesRequest, options: TerminateOptions): Promise<void> {
  const { api, pollMs, logger, signal } = options;
  const token = request.ClientToken as string;
  try {
    let found: Ec2InstanceDescription[] = [];
    for (let lookup = 0; lookup < LOST_LAUNCH_LOOKUPS && found.length === 0; lookup++) {
      if (lookup > 0) await abortableSleep(pollMs, signal);
      found = await launchedWith(api, token, signal);
    }
    if (found.length === 0) {
      logger.info({ client_token: token }, 'no instance found for an unanswered launch; replaying it to learn its instance');
      const replayed = await api.runInstances(request, signal).catch((err: unknown) => {
        // An answer that could not be used says nothing; one that is an EC2 error means nothing was launched.
        if (err instanceof CloudCallError && err.cause instanceof MalformedAnswerError) throw err;
        logger.info({ client_token: token, err: errorMessage(err) }, 'replayed launch failed: nothing was launched');
        return undefined;
      });
      if (replayed?.InstanceId !== undefined && !GONE.has(replayed.State?.Name ?? '')) found = [replayed];
    }
    for (const instance of found) {
      const id = instance.InstanceId as string;
      logger.info({ instance: id, client_token: token }, 'terminating the instance of an unanswered launch');
      await terminateInstance(id, { ...options, launchedAt: launchTimeOf(instance) });
    }
  } catch (err) {
    logger.error(
      { client_token: token, err: errorMessage(err) },
      'could not make sure an unanswered launch left no instance: look for instances with this client token and terminate them',
    );
  }
}
