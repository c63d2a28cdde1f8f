/**
 * HOST_TERMINATE's last step on its own (src/fleet/leave-group.ts), against
 * the fakes through the real SDKs: the one permission a GCE host needs to
 * leave its group (the one deploy/gce-mig grants), and the answers that
 * make it fail. A failure is logged with what was wrong and never thrown:
 * the worker has drained and exits 0 either way.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { leaveGroup } from '../../src/fleet/leave-group.js';
import { FakeGce } from '../fakes/gce-server.js';
import { placeManagedHost } from '../fakes/gce-settings.js';
import { useAwsHost } from '../helpers/aws-host.js';
import { captureLog } from '../helpers/log-capture.js';
import { setProcessEnv } from '../helpers/process-env.js';

const ZONE = 'us-central1-b';

describe('leaving a GCE managed instance group', () => {
  let fake: FakeGce;
  let restoreEnv: () => void;
  let hostMetadata: FakeGce['metadata'];

  beforeAll(async () => {
    fake = await FakeGce.start();
    restoreEnv = setProcessEnv({ GCE_METADATA_HOST: fake.host });
    placeManagedHost(fake, ZONE, 'mayfly-host-7');
    hostMetadata = fake.metadata;
  });
  afterAll(async () => {
    restoreEnv?.();
    await fake?.close();
  });
  beforeEach(() => {
    fake.permissions = undefined;
    fake.metadata = hostMetadata;
  });

  const leave = async (): Promise<{ left: boolean; errors: string[] }> => {
    const log = captureLog();
    const left = await leaveGroup({ cloud: 'gce', gceApiEndpoint: fake.endpoint, logger: log.logger });
    return { left, errors: log.lines.filter((line) => line.level === 'error').map((line) => String(line['err'])) };
  };

  it('needs compute.instanceGroupManagers.update and nothing else, and lowers the target size by one', async () => {
    const group = fake.addManagedGroup(ZONE, 'mayfly-fleet', 5);
    fake.permissions = new Set(['compute.instanceGroupManagers.update']);
    expect(await leave()).toEqual({ left: true, errors: [] });
    expect(group.targetSize).toBe(4);
    expect(group.deletions.map((deletion) => deletion.instances)).toEqual([[`zones/${ZONE}/instances/mayfly-host-7`]]);

    fake.permissions = new Set();
    const refused = await leave();
    expect(refused.left).toBe(false);
    expect(refused.errors).toEqual([expect.stringContaining('compute.instanceGroupManagers.update')]);
    expect(group.targetSize).toBe(4);
  });

  it('says so, naming the attribute, when the instance is in no group or a regional one', async () => {
    fake.addManagedGroup(ZONE, 'mayfly-fleet', 1);
    const callsBefore = fake.count('instanceGroupManagers.deleteInstances');
    fake.metadata = { projectId: fake.project, zone: ZONE, network: 'default', instanceName: 'mayfly-host-7' };
    const alone = await leave();
    expect(alone.left).toBe(false);
    expect(alone.errors).toEqual([expect.stringMatching(/not in a managed instance group: .*instance\/attributes\/created-by/)]);

    fake.metadata = { ...fake.metadata, createdBy: 'projects/123456789/regions/us-central1/instanceGroupManagers/mayfly-fleet' };
    const regional = await leave();
    expect(regional.errors).toEqual([expect.stringContaining('regional groups are not supported')]);
    expect(fake.count('instanceGroupManagers.deleteInstances')).toBe(callsBefore);
  });

  it('refuses a metadata answer that is not what GCE serves, naming the key', async () => {
    fake.metadata = { projectId: fake.project, zone: ZONE, network: 'default', instanceName: 'Not A Name!', createdBy: 'x' };
    const garbled = await leave();
    expect(garbled.left).toBe(false);
    expect(garbled.errors).toEqual([expect.stringContaining('GCE metadata instance/name')]);
  });
});

describe('leaving an EC2 Auto Scaling group', () => {
  const host = useAwsHost();

  it('says so when the instance is in no group, and terminates nothing', async () => {
    const log = captureLog();
    expect(await leaveGroup({ cloud: 'aws', logger: log.logger })).toBe(false);
    expect(log.lines.filter((line) => line.level === 'error').map((line) => String(line['err']))).toEqual([expect.stringContaining('is not in an Auto Scaling group')]);
    expect(host.autoScaling.callsOf('TerminateInstanceInAutoScalingGroup')).toEqual([]);
  });
});
