/**
 * An EC2 host leaves its Auto Scaling group: `TerminateInstanceInAutoScalingGroup`
 * on its own instance with `ShouldDecrementDesiredCapacity`, so the group
 * terminates it and does not launch a replacement. The instance, its region
 * and its group are found as the lifecycle hook finds them (auto-scaling.ts).
 */
import { TerminateInstanceInAutoScalingGroupCommand } from '@aws-sdk/client-auto-scaling';
import type { Logger } from '../../logger.js';
import { findAutoScalingMember } from './auto-scaling.js';
import { ImdsClient } from './imds.js';

/** Terminate this instance through its group, lowering the desired capacity. Resolves once Auto Scaling accepted it. */
export async function leaveAutoScalingGroup(logger: Logger, signal: AbortSignal): Promise<void> {
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
  } finally {
    member.client.destroy();
  }
}
