/**
 * The job VMs as the orphan reaper sees them (`Backend.listManaged`): only
 * VMs carrying all of mayfly's labels (job id, worker, lease expiry), read
 * back into a `ManagedInstance`. Anything else in the project is not ours.
 */
import type { ManagedInstance } from '../../src/backend/kit.js';
import type { GceInstanceResource } from './api.js';
import { LABELS, labelValue } from './instance-spec.js';

/** The list filter: VMs with a lease label (GCE: `:*` tests that a label is set). The other labels are checked here. */
export const MANAGED_FILTER = `labels.${LABELS.leaseExpiry}:*`;

/**
 * `resource` as a managed instance, or undefined when it lacks one of
 * mayfly's labels. The worker label holds the host name as a label value
 * (lower case, 63 characters): when it matches this worker's, it reads
 * back as `hostname` itself, so the reaper can compare names.
 */
export function managedInstance(resource: GceInstanceResource, hostname: string): ManagedInstance | undefined {
  const labels = resource.labels ?? {};
  const jobId = labels[LABELS.jobId];
  const worker = labels[LABELS.worker];
  const lease = labels[LABELS.leaseExpiry];
  if (resource.name == null || jobId === undefined || worker === undefined || lease === undefined) return undefined;
  const instance: ManagedInstance = { id: resource.name, worker: worker === labelValue(hostname) ? hostname : worker };
  if (/^\d+$/.test(jobId)) instance.jobId = Number(jobId);
  if (/^\d+$/.test(lease)) instance.leaseExpiresAt = new Date(Number(lease) * 1000);
  const created = Date.parse(resource.creationTimestamp ?? '');
  if (!Number.isNaN(created)) instance.createdAt = new Date(created);
  return instance;
}
