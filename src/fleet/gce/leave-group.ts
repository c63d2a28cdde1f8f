/**
 * A GCE host leaves its managed instance group: `instanceGroupManagers.
 * deleteInstances` on its own instance, which deletes the VM and lowers
 * the group's target size, so the autoscaler does not start a replacement.
 *
 * Everything comes from the metadata server (`GCE_METADATA_HOST` in tests):
 * the project, the zone, the instance's name, and its group from the
 * `created-by` attribute GCE sets on every instance a group manages; the
 * access token too, the instance's service account's (google-auth-library's
 * `Compute` client). Each answer is checked, and a wrong one named.
 */
import { instance, project } from 'gcp-metadata';
import { Compute } from 'google-auth-library';
import { errorMessage, HostMetadataError } from '../../errors.js';
import type { Logger } from '../../logger.js';
import { endpointOptions } from '../../util/google-endpoint.js';

/** Longest the deleteInstances call may take, retries included: GCE answers with an operation at once, in well under a second. */
const LEAVE_TIMEOUT_MS = 60_000;

/** A project id (6 to 30 characters; `domain.com:name` for old domain-scoped projects). */
const PROJECT_ID = /^(?:[a-z][a-z0-9.-]*:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$/;
/** A resource name (RFC 1035 label), as instances, zones and groups have. */
const NAME = /^[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?$/;
/** `created-by` of an instance a zonal group manages. */
const ZONAL_GROUP = /^projects\/[^/]+\/zones\/([a-z0-9-]+)\/instanceGroupManagers\/([a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)$/;

/** Where this instance sits in its group. */
export interface GroupMembership {
  project: string;
  zone: string;
  instanceName: string;
  groupName: string;
}

async function metadataValue(read: () => Promise<unknown>, key: string, pattern: RegExp): Promise<string> {
  let value: unknown;
  try {
    value = await read();
  } catch (err) {
    throw new HostMetadataError(`GCE metadata ${key}: could not be read (${errorMessage(err)})`, { cause: err });
  }
  const text = typeof value === 'string' ? value.trim() : '';
  if (!pattern.test(text)) throw new HostMetadataError(`GCE metadata ${key}: "${String(value).slice(0, 80)}" is not what GCE serves there`);
  return text;
}

/** This instance's project, zone, name and managed instance group, from the metadata server. */
export async function findGroupMembership(): Promise<GroupMembership> {
  const projectId = await metadataValue(() => project('project-id'), 'project/project-id', PROJECT_ID);
  const zonePath = await metadataValue(() => instance('zone'), 'instance/zone', /^projects\/[^/]+\/zones\/[a-z0-9-]+$/);
  const instanceName = await metadataValue(() => instance('name'), 'instance/name', NAME);
  const createdBy = await metadataValue(() => instance('attributes/created-by'), 'instance/attributes/created-by', /\S/).catch((err: unknown) => {
    throw new HostMetadataError(`this instance is not in a managed instance group: ${(err as Error).message}`, { cause: err });
  });
  const group = ZONAL_GROUP.exec(createdBy);
  if (!group) {
    throw new HostMetadataError(`GCE metadata instance/attributes/created-by: "${createdBy.slice(0, 120)}" is not a zonal managed instance group (regional groups are not supported)`);
  }
  return { project: projectId, zone: zonePath.split('/').pop() as string, instanceName, groupName: group[2] as string };
}

/** Delete this instance through its group, lowering the group's target size. Resolves once GCE accepted the request. */
export async function leaveManagedInstanceGroup(endpoint: string, logger: Logger): Promise<void> {
  const member = await findGroupMembership();
  const { InstanceGroupManagersClient } = await import('@google-cloud/compute');
  type ClientOptions = NonNullable<ConstructorParameters<typeof InstanceGroupManagersClient>[0]>;
  const client = new InstanceGroupManagersClient({
    ...endpointOptions(endpoint),
    fallback: true,
    // The same class as gax's own copy of google-auth-library, at another path.
    authClient: new Compute({ scopes: ['https://www.googleapis.com/auth/compute'] }) as unknown as NonNullable<ClientOptions['authClient']>,
  });
  try {
    const [operation] = await client.deleteInstances(
      {
        project: member.project,
        zone: member.zone,
        instanceGroupManager: member.groupName,
        instanceGroupManagersDeleteInstancesRequestResource: { instances: [`zones/${member.zone}/instances/${member.instanceName}`] },
      },
      // gax takes no AbortSignal: a deadline instead, and google-gax retries what is retryable within it.
      { timeout: LEAVE_TIMEOUT_MS },
    );
    logger.info({ ...member, operation: operation.name }, 'left the managed instance group: GCE deletes this instance and lowers the target size');
  } finally {
    await client.close();
  }
}
