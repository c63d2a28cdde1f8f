/**
 * The job instances as the orphan reaper sees them (`Backend.listManaged`):
 * only instances carrying all of mayfly's tags (job id, worker, lease
 * expiry; travis-ci/worker sets the job id but neither of the others), read
 * back into a `ManagedInstance`. Anything else in the account is not ours.
 */
import type { Filter } from '@aws-sdk/client-ec2';
import type { ManagedInstance } from '../../src/backend/kit.js';
import type { Ec2InstanceDescription } from './api.js';
import { TAG_JOB_ID, TAG_LEASE_EXPIRES, TAG_WORKER } from './tags.js';

/** Instances with a lease tag that still exist (terminated ones linger in listings for an hour). */
export const MANAGED_FILTERS: Filter[] = [
  { Name: 'tag-key', Values: [TAG_LEASE_EXPIRES] },
  { Name: 'instance-state-name', Values: ['pending', 'running', 'stopping', 'stopped'] },
];

/** `description` as a managed instance, or undefined when it lacks one of mayfly's tags. */
export function managedInstance(description: Ec2InstanceDescription): ManagedInstance | undefined {
  const tags = new Map((description.Tags ?? []).map((tag) => [tag.Key ?? '', tag.Value ?? '']));
  const jobId = tags.get(TAG_JOB_ID);
  const worker = tags.get(TAG_WORKER);
  const lease = tags.get(TAG_LEASE_EXPIRES);
  if (description.InstanceId === undefined || jobId === undefined || worker === undefined || lease === undefined) return undefined;
  const instance: ManagedInstance = { id: description.InstanceId, worker };
  if (/^\d+$/.test(jobId)) instance.jobId = Number(jobId);
  const expires = Date.parse(lease);
  if (!Number.isNaN(expires)) instance.leaseExpiresAt = new Date(expires);
  if (description.LaunchTime !== undefined) instance.createdAt = new Date(description.LaunchTime);
  return instance;
}
