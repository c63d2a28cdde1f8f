/**
 * The RunInstances request for one job: image, instance type, disk,
 * network, spot options, user data and tags, all in the one call so that no
 * instance ever exists untagged, and a client token that makes the call
 * idempotent (a retry after a lost answer returns the same instance instead
 * of launching a second one).
 */
import type { RunInstancesRequest } from '@aws-sdk/client-ec2';
import type { StartAttributes } from '../../src/backend/kit.js';
import type { SelectedImage } from './images.js';
import type { Ec2Settings, Tag } from './settings.js';

/**
 * `vm_size` -> instance type, the one place this mapping lives. travis maps
 * these sizes to Graviton m6g types whatever the arch; an amd64 AMI can't
 * boot on those, so amd64 jobs get the same sizes of m6i.
 */
export const VM_SIZE_INSTANCE_TYPES: Readonly<Record<'amd64' | 'arm64', Readonly<Record<string, string>>>> = {
  amd64: { medium: 'm6i.large', large: 'm6i.xlarge', 'x-large': 'm6i.2xlarge', '2x-large': 'm6i.4xlarge' },
  arm64: { medium: 'm6g.large', large: 'm6g.xlarge', 'x-large': 'm6g.2xlarge', '2x-large': 'm6g.4xlarge' },
};

/** travis' arm64 archs (`arm64`, `arm64-graviton2`) run on Graviton. */
const isArm64 = (attributes: Pick<StartAttributes, 'arch'>): boolean => attributes.arch.startsWith('arm64');

/**
 * The instance type the job's `vm_size` maps to; undefined when it asked for
 * none or for a size not in the table (INSTANCE_TYPE then). travis reports
 * the mapped type as the job's `vm_size` from then on.
 */
export function mappedInstanceType(attributes: Pick<StartAttributes, 'vmSize' | 'arch'>): string | undefined {
  if (!attributes.vmSize) return undefined;
  const table = isArm64(attributes) ? VM_SIZE_INSTANCE_TYPES.arm64 : VM_SIZE_INSTANCE_TYPES.amd64;
  return table[attributes.vmSize];
}


/** The instance type of a job whose `vm_size` maps to none: INSTANCE_TYPE, or INSTANCE_TYPE_ARM64 for an arm64 job. */
export function defaultInstanceType(attributes: Pick<StartAttributes, 'arch'>, settings: Pick<Ec2Settings, 'instanceType' | 'instanceTypeArm64'>): string {
  return isArm64(attributes) ? settings.instanceTypeArm64 : settings.instanceType;
}

/**
 * Burstable families travis launches with unlimited CPU credits, so a build
 * is not throttled once its credits run out (travis: `^(t2|t3)`).
 */
const UNLIMITED_CREDIT_TYPES = /^(t2|t3)/;

export interface LaunchInput {
  settings: Ec2Settings;
  image: SelectedImage;
  instanceType: string;
  /** Idempotency token, also how a launch whose answer was lost is found again (at most 64 ASCII characters). */
  clientToken: string;
  /** User data text (before base64). */
  userData: string;
  tags: Tag[];
}

export function launchRequest({ settings, image, instanceType, clientToken, userData, tags }: LaunchInput): RunInstancesRequest {
  const request: RunInstancesRequest = {
    ImageId: image.imageId,
    InstanceType: instanceType as RunInstancesRequest['InstanceType'],
    MinCount: 1,
    MaxCount: 1,
    ClientToken: clientToken,
    UserData: Buffer.from(userData, 'utf8').toString('base64'),
    EbsOptimized: settings.ebsOptimized,
    // A power-off from inside (AUTO_IMPLODE, a job running `poweroff`) ends
    // the instance instead of leaving a stopped one that still costs storage.
    InstanceInitiatedShutdownBehavior: 'terminate',
    // IMDSv2 only: a job's code (or a proxy it is tricked into) can't read
    // the instance metadata with a plain GET, the SSRF path IMDSv1 leaves open.
    MetadataOptions: { HttpTokens: 'required', HttpEndpoint: 'enabled' },
    BlockDeviceMappings: [
      { DeviceName: image.rootDeviceName, Ebs: { VolumeSize: settings.diskSize, DeleteOnTermination: true } },
    ],
    TagSpecifications: [
      { ResourceType: 'instance', Tags: tags },
      { ResourceType: 'volume', Tags: tags },
    ],
  };
  if (settings.keyName !== '') request.KeyName = settings.keyName;
  // travis decides on INSTANCE_TYPE even when vm_size picked another type, which EC2 refuses for non-burstable ones.
  if (UNLIMITED_CREDIT_TYPES.test(instanceType)) request.CreditSpecification = { CpuCredits: 'unlimited' };
  if (settings.subnetId !== '') {
    // Only an explicit network interface can say yes or no to a public IP;
    // its groups then go on the interface.
    request.NetworkInterfaces = [
      {
        DeviceIndex: 0,
        SubnetId: settings.subnetId,
        AssociatePublicIpAddress: settings.publicIp,
        DeleteOnTermination: true,
        ...(settings.securityGroupIds.length > 0 ? { Groups: settings.securityGroupIds } : {}),
      },
    ];
  } else if (settings.securityGroupIds.length > 0) {
    request.SecurityGroupIds = settings.securityGroupIds;
  }
  if (settings.spot) {
    request.InstanceMarketOptions = {
      MarketType: 'spot',
      SpotOptions: {
        SpotInstanceType: 'one-time',
        InstanceInterruptionBehavior: 'terminate',
        ...(settings.spotMaxPrice === '' ? {} : { MaxPrice: settings.spotMaxPrice }),
      },
    };
  }
  return request;
}
