/**
 * `TRAVIS_WORKER_HOST_TERMINATE`: after the lifetime policy drained the
 * worker, the host removes itself from its autoscaled group, so the group
 * shrinks by one instead of replacing it (docs/fleet.md, "Host lifetime").
 * Each cloud's SDK is loaded only when that cloud is the host's.
 */
import type { WorkerConfig } from '../config/types.js';
import { errorMessage } from '../errors.js';
import type { Logger } from '../logger.js';
import type { Releasers } from '../releasers.js';
import type { LifetimeWatch } from './lifetime.js';

/** The Compute API, unless `TRAVIS_WORKER_HOST_GCE_API_ENDPOINT` says otherwise. */
const DEFAULT_COMPUTE_ENDPOINT = 'https://compute.googleapis.com';

/** Longest leaving may take: the host has drained and only waits for the cloud to accept one call. */
const LEAVE_TIMEOUT_MS = 2 * 60_000;

export interface LeaveGroupOptions {
  cloud: 'aws' | 'gce';
  /** The Compute API base URL (gce); default https://compute.googleapis.com. */
  gceApiEndpoint?: string;
  /** The group's termination hook this host completes for its own termination (aws). */
  asgLifecycleHook?: string;
  logger: Logger;
}

/** Remove this host from its group. A failure is logged, never thrown: the worker has drained and exits 0 either way. */
export async function leaveGroup({ cloud, gceApiEndpoint, asgLifecycleHook, logger }: LeaveGroupOptions): Promise<boolean> {
  try {
    if (cloud === 'aws') {
      const { leaveAutoScalingGroup } = await import('./aws/leave-group.js');
      await leaveAutoScalingGroup(logger, AbortSignal.timeout(LEAVE_TIMEOUT_MS), asgLifecycleHook);
    } else {
      const { leaveManagedInstanceGroup } = await import('./gce/leave-group.js');
      await leaveManagedInstanceGroup(gceApiEndpoint ?? DEFAULT_COMPUTE_ENDPOINT, logger);
    }
    return true;
  } catch (err) {
    logger.error({ cloud, err: errorMessage(err) }, 'could not leave the autoscaled group: the host stays in it, drained (its autoscaler or an operator removes it)');
    return false;
  }
}

/**
 * With `TRAVIS_WORKER_HOST_TERMINATE`, leave the group once `lifetime` has
 * drained the worker: registered as the last releaser, so every job has
 * settled and its instance is destroyed by then. A drain for any other
 * reason (SIGTERM, a notice) leaves the group to its autoscaler.
 */
export function leaveGroupWhenLifetimeEnds(config: WorkerConfig, lifetime: LifetimeWatch, releasers: Releasers, logger: Logger): void {
  const cloud = config.host.cloud;
  if (!config.lifetime.hostTerminate || cloud === 'none') return;
  const { gceApiEndpoint } = config.lifetime;
  const { asgLifecycleHook } = config.host;
  releasers.addFinal('leaving the autoscaled group', async () => {
    if (lifetime.reached === undefined) return;
    await leaveGroup({
      cloud,
      logger,
      ...(gceApiEndpoint === undefined ? {} : { gceApiEndpoint }),
      ...(asgLifecycleHook === undefined ? {} : { asgLifecycleHook }),
    });
  });
}
