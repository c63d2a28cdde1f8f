/**
 * This host as a member of an EC2 Auto Scaling group: its instance id and
 * region (from IMDS), an Auto Scaling client for that region, and the name
 * of the group it belongs to (DescribeAutoScalingInstances), so an operator
 * names neither. The client takes its endpoint from the SDK's standard
 * settings (`AWS_ENDPOINT_URL_AUTO_SCALING`, ...) and its credentials from
 * the default chain (the instance profile, on a host).
 *
 * The lifecycle hook and the host's self-termination both start here.
 */
import { AutoScalingClient, CompleteLifecycleActionCommand, DescribeAutoScalingInstancesCommand } from '@aws-sdk/client-auto-scaling';
import { HostMetadataError } from '../../errors.js';
import type { ImdsClient } from './imds.js';

/** An EC2 instance id: `i-` and 8 or 17 hex digits. */
const INSTANCE_ID = /^i-(?:[0-9a-f]{8}|[0-9a-f]{17})$/;
/** A region name as IMDS gives it (`us-east-1`, `ap-southeast-2`, `us-gov-west-1`). */
const REGION = /^[a-z]{2}(?:-[a-z]+)+-\d+$/;

/** The group this instance is in, and how to talk to Auto Scaling about it. */
export interface AutoScalingMember {
  client: AutoScalingClient;
  instanceId: string;
  groupName: string;
  /** The instance's lifecycle state in the group (`InService`, `Terminating:Wait`, ...). */
  lifecycleState: string;
}

/** Thrown when the instance is not in any Auto Scaling group. */
export class NotInAutoScalingGroupError extends Error {
  readonly code = 'E_NOT_IN_ASG';
  constructor(readonly instanceId: string) {
    super(`instance ${instanceId} is not in an Auto Scaling group`);
    this.name = new.target.name;
  }
}

/** This instance's id, from IMDS, checked. */
export async function ownInstanceId(imds: ImdsClient, signal: AbortSignal): Promise<string> {
  const id = await imds.require('instance-id', signal);
  if (!INSTANCE_ID.test(id)) throw new HostMetadataError(`instance metadata instance-id: "${id.slice(0, 40)}" is not an instance id`);
  return id;
}

/** An Auto Scaling client for this instance's region (from IMDS). */
export async function autoScalingClient(imds: ImdsClient, signal: AbortSignal): Promise<AutoScalingClient> {
  const region = await imds.require('placement/region', signal);
  if (!REGION.test(region)) throw new HostMetadataError(`instance metadata placement/region: "${region.slice(0, 40)}" is not a region`);
  return new AutoScalingClient({ region });
}

/** The group `instanceId` is in; throws `NotInAutoScalingGroupError` if none. */
export async function groupOf(client: AutoScalingClient, instanceId: string, signal: AbortSignal): Promise<{ groupName: string; lifecycleState: string }> {
  const answer = await client.send(new DescribeAutoScalingInstancesCommand({ InstanceIds: [instanceId] }), { abortSignal: signal });
  const own = answer.AutoScalingInstances?.find((instance) => instance.InstanceId === instanceId);
  if (!own) throw new NotInAutoScalingGroupError(instanceId);
  if (!own.AutoScalingGroupName) throw new HostMetadataError('DescribeAutoScalingInstances: AutoScalingGroupName missing');
  return { groupName: own.AutoScalingGroupName, lifecycleState: own.LifecycleState ?? '' };
}

/** This instance, its group and a client: everything a call about "this host in its group" needs. */
export async function findAutoScalingMember(imds: ImdsClient, signal: AbortSignal): Promise<AutoScalingMember> {
  const instanceId = await ownInstanceId(imds, signal);
  const client = await autoScalingClient(imds, signal);
  try {
    return { client, instanceId, ...(await groupOf(client, instanceId, signal)) };
  } catch (err) {
    client.destroy();
    throw err;
  }
}

/** Let the group go on with `member`'s pending lifecycle action of `hookName` (CONTINUE, by instance id). */
export async function completeLifecycleAction(member: AutoScalingMember, hookName: string, signal: AbortSignal): Promise<void> {
  await member.client.send(
    new CompleteLifecycleActionCommand({
      AutoScalingGroupName: member.groupName,
      LifecycleHookName: hookName,
      InstanceId: member.instanceId,
      LifecycleActionResult: 'CONTINUE',
    }),
    { abortSignal: signal },
  );
}
