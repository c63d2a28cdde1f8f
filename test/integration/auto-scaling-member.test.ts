/**
 * The host finds itself in its Auto Scaling group with nothing configured
 * but the SDK's endpoints: its instance id and region from IMDSv2, its
 * credentials from the instance profile (the SDK's default chain, through
 * the same IMDS), its group from DescribeAutoScalingInstances.
 */
import { CompleteLifecycleActionCommand } from '@aws-sdk/client-auto-scaling';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { findAutoScalingMember, NotInAutoScalingGroupError } from '../../src/fleet/aws/auto-scaling.js';
import { ImdsClient } from '../../src/fleet/aws/imds.js';
import { FakeImds } from '../fakes/imds-server.js';
import { useAwsHost } from '../helpers/aws-host.js';

describe('the host in its Auto Scaling group', () => {
  const host = useAwsHost();

  it('learns its instance id, its group and its state, signing with the instance profile', async () => {
    const { autoScaling, imds } = host;
    autoScaling.addGroup('mayfly-fleet', ['drain']);
    autoScaling.addInstance('mayfly-fleet', imds.instanceId);
    const member = await findAutoScalingMember(new ImdsClient(), AbortSignal.timeout(10_000));
    try {
      expect(member).toMatchObject({ instanceId: imds.instanceId, groupName: 'mayfly-fleet', lifecycleState: 'InService' });
      expect(await member.client.config.region()).toBe(imds.region);
      expect(autoScaling.callsOf('DescribeAutoScalingInstances')).toEqual([
        expect.objectContaining({ status: 200, params: expect.objectContaining({ 'InstanceIds.member.1': imds.instanceId }) }),
      ]);
      // The fake refuses a completion that names a hook the group lacks, as AWS does.
      await expect(
        member.client.send(new CompleteLifecycleActionCommand({ AutoScalingGroupName: 'mayfly-fleet', LifecycleHookName: 'other', InstanceId: member.instanceId, LifecycleActionResult: 'CONTINUE' })),
      ).rejects.toMatchObject({ name: 'ValidationError' });
    } finally {
      member.client.destroy();
    }
  });

  it('says so when the instance is in no group', async () => {
    host.autoScaling.instances.clear();
    await expect(findAutoScalingMember(new ImdsClient(), AbortSignal.timeout(10_000))).rejects.toBeInstanceOf(NotInAutoScalingGroupError);
  });
});

describe('IMDSv2', () => {
  let imds: FakeImds;
  beforeAll(async () => {
    imds = await FakeImds.start();
  });
  afterAll(() => imds.close());

  it('reads with a session token, undefined for what is not there, and takes a new token when the old one expired', async () => {
    const client = new ImdsClient({ endpoint: imds.endpoint });
    const signal = AbortSignal.timeout(10_000);
    expect(await client.get('instance-id', signal)).toBe(imds.instanceId);
    expect(await client.get('spot/instance-action', signal)).toBeUndefined();
    imds.expireTokens();
    expect(await client.get('placement/region', signal)).toBe(imds.region);
    const tokens = imds.requests.filter((request) => request.method === 'PUT');
    expect(tokens.map((request) => request.status)).toEqual([200, 200]);
    expect(imds.requests.filter((request) => request.status === 401)).toHaveLength(1);
  });

  it('takes a new token before the old one expires, so no read is refused', async () => {
    const client = new ImdsClient({ endpoint: imds.endpoint, tokenTtlSeconds: 60 });
    const signal = AbortSignal.timeout(10_000);
    const before = imds.requests.length;
    vi.useFakeTimers({ toFake: ['Date'] });
    try {
      expect(await client.get('instance-id', signal)).toBe(imds.instanceId);
      expect(await client.get('instance-id', signal)).toBe(imds.instanceId);
      // 55 of the token's 60 seconds later: still valid at IMDS, but about to expire.
      vi.setSystemTime(Date.now() + 55_000);
      expect(await client.get('instance-id', signal)).toBe(imds.instanceId);
    } finally {
      vi.useRealTimers();
    }
    expect(imds.requests.slice(before).map((request) => `${request.method} ${request.status}`)).toEqual(['PUT 200', 'GET 200', 'GET 200', 'PUT 200', 'GET 200']);
  });

  it('fails with a named error when the service answers garbage', async () => {
    const client = new ImdsClient({ endpoint: imds.endpoint });
    imds.mode = 'garbage';
    try {
      await expect(client.get('instance-id', AbortSignal.timeout(10_000))).rejects.toMatchObject({ code: 'E_HOST_METADATA' });
    } finally {
      imds.mode = 'ok';
    }
  });
});
