import type { Logger } from '../logger.js';
import { errorMessage } from '../errors.js';
import { abortableSleep } from '../util/abort.js';
import type { Instance } from './contract.js';

/**
 * Deletion is retried because a cloud API may throttle or fail a delete
 * transiently; four tries over ~15 s outlast a typical throttling window.
 * What still fails is said in the log, naming the instance.
 */
export const DESTROY_ATTEMPTS = 4;
const DESTROY_FIRST_RETRY_MS = 1000;

/** Destroy an instance on every path; never throws. */
export async function destroyInstance(instance: Instance, logger: Logger): Promise<boolean> {
  const never = new AbortController().signal;
  for (let attempt = 1; attempt <= DESTROY_ATTEMPTS; attempt++) {
    try {
      await instance.destroy();
      logger.debug({ instance: instance.id }, 'instance destroyed');
      return true;
    } catch (err) {
      const last = attempt === DESTROY_ATTEMPTS;
      logger[last ? 'error' : 'warn'](
        { instance: instance.id, attempt, err: errorMessage(err) },
        last ? 'could not destroy instance: it may still be running, delete it by hand' : 'destroying instance failed, retrying',
      );
      if (!last) await abortableSleep(DESTROY_FIRST_RETRY_MS * 2 ** (attempt - 1), never);
    }
  }
  return false;
}
