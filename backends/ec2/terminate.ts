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

/** States from which an instance can't come back: nothing more to do. */
const GONE: ReadonlySet<string> = new Set(['shutting-down', 'terminated']);

export interface TerminateOptions {
  api: Ec2Api;
  /** Pause between state checks, in ms. */
  pollMs: number;
  logger: Logger;
  signal: AbortSignal;
}

const isNotFound = (err: unknown): boolean => err instanceof CloudCallError && err.kind === 'not-found';

async function stateOf(api: Ec2Api, id: string, signal: AbortSignal): Promise<string> {
  try {
    const [found] = await api.describeInstances({ ids: [id] }, signal);
    return found?.State?.Name ?? 'terminated';
  } catch (err) {
    if (isNotFound(err)) return 'terminated';
    throw err;
  }
}

/** Terminate `id` and wait until EC2 says it is going; throws if it keeps running. */
export async function terminateInstance(id: string, { api, pollMs, logger, signal }: TerminateOptions): Promise<void> {
  let state = 'unknown';
  for (let attempt = 1; attempt <= TERMINATE_ATTEMPTS; attempt++) {
    try {
      await api.terminateInstances([id], signal);
    } catch (err) {
      if (isNotFound(err)) return;
      throw err;
    }
    for (let poll = 0; poll < TERMINATE_VERIFY_POLLS; poll++) {
      state = await stateOf(api, id, signal);
      if (GONE.has(state)) return;
      await abortableSleep(pollMs, signal);
    }
    logger.warn({ instance: id, state, attempt }, 'instance still not terminating after TerminateInstances; asking again');
  }
  throw new Error(`instance ${id} is still ${state} after ${TERMINATE_ATTEMPTS} termination requests`);
}

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
    let ids: string[] = [];
    for (let lookup = 0; lookup < LOST_LAUNCH_LOOKUPS && ids.length === 0; lookup++) {
      if (lookup > 0) await abortableSleep(pollMs, signal);
      ids = (await launchedWith(api, token, signal)).map((instance) => instance.InstanceId as string);
    }
    if (ids.length === 0) {
      logger.info({ client_token: token }, 'no instance found for an unanswered launch; replaying it to learn its instance');
      const replayed = await api.runInstances(request, signal).catch((err: unknown) => {
        // An answer that could not be used says nothing; one that is an EC2 error means nothing was launched.
        if (err instanceof CloudCallError && err.cause instanceof MalformedAnswerError) throw err;
        logger.info({ client_token: token, err: errorMessage(err) }, 'replayed launch failed: nothing was launched');
        return undefined;
      });
      if (replayed?.InstanceId !== undefined && !GONE.has(replayed.State?.Name ?? '')) ids = [replayed.InstanceId];
    }
    for (const id of ids) {
      logger.info({ instance: id, client_token: token }, 'terminating the instance of an unanswered launch');
      await terminateInstance(id, options);
    }
  } catch (err) {
    logger.error(
      { client_token: token, err: errorMessage(err) },
      'could not make sure an unanswered launch left no instance: look for instances with this client token and terminate them',
    );
  }
}
