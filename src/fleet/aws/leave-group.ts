/**
 * An EC2 host leaves its Auto Scaling group: `TerminateInstanceInAutoScalingGroup`
 * on its own instance with `ShouldDecrementDesiredCapacity`, so the group
 * terminates it and does not launch a replacement. The instance, its region
 * and its group are found as the lifecycle hook finds them (auto-scaling.ts).
 */
import { TerminateInstanceInAutoScalingGroupCommand } from '@aws-sdk/client-auto-scaling';
import { errorMessage } from '../../errors.js';
import type { Logger } from '../../logger.js';
import { abortableSleep } from '../../util/abort.js';
import { completeLifecycleAction, findAutoScalingMember, type AutoScalingMember } from './auto-scaling.js';
import { ImdsClient } from './imds.js';

/**
 * The termination goes through the group's termination hook like any
 * scale-in, but this host has already drained: it completes the action at
 * once rather than leave the instance waiting out the hook's timeout. The
 * action exists only once Auto Scaling has started the termination, a
 * moment after the call: until then the completion is refused and asked
 * again, this many times, this far apart.
 */
const HOOK_COMPLETION_ATTEMPTS = 12;
const HOOK_COMPLETION_PAUSE_MS = 5_000;

/**
 * Terminate this instance through its group, lowering the desired capacity;
 * with `hookName` (`TRAVIS_WORKER_ASG_LIFECYCLE_HOOK`), complete the hook's
 * action for it too. Resolves once Auto Scaling accepted it.
 */
export async function leaveAutoScalingGroup(logger: Logger, signal: AbortSignal, hookName?: string): Promise<void> {
  const member = await findAutoScalingMember(new ImdsClient(), signal);
  try {
    const answer = await member.client.send(
      new TerminateInstanceInAutoScalingGroupCommand({ InstanceId: member.instanceId, ShouldDecrementDesiredCapacity: true }),
      { abortSignal: signal },
    );
    logger.info(
      { instance_id: member.instanceId, group: member.groupName, activity: answer.Activity?.ActivityId },
      'left the Auto Scaling group: it terminates this instance and lowers the desired capacity',
    );
    if (hookName !== undefined) await completeOwnHook(member, hookName, logger, signal);
  } finally {
    member.client.destroy();
  }
}

async function completeOwnHook(member: AutoScalingMember, hookName: string, logger: Logger, signal: AbortSignal): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await completeLifecycleAction(member, hookName, signal);
      logger.info({ hook: hookName, group: member.groupName }, 'lifecycle action of its own termination completed: no wait for the hook');
      return;
    } catch (err) {
      // Anything but "no action yet" (ValidationError) will not change by asking again.
      if ((err as { name?: string }).name !== 'ValidationError' || attempt >= HOOK_COMPLETION_ATTEMPTS) throw err;
      logger.debug({ hook: hookName, attempt, err: errorMessage(err) }, 'no lifecycle action for this termination yet; asking again');
      await abortableSleep(HOOK_COMPLETION_PAUSE_MS, signal);
    }
  }
}
