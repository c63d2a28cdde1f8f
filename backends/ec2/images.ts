/**
 * Which AMI a job boots: the setting is picked the way travis' "env" image
 * selector picks it (IMAGE_<KEY> for the most specific key the job's
 * language, dist, group and os make, else IMAGE_DEFAULT; a value naming
 * another key is followed once, which gives aliases), then resolved with
 * DescribeImages. A value is either an AMI id (`ami-...`) or an AMI name
 * filter (`*` and `?` wildcards) over IMAGE_OWNERS' available images, of
 * which the newest (by creation date) wins.
 */
import { selectImageSetting, InstanceStartError, type StartAttributes } from '../../src/backend/kit.js';
import type { Image } from '@aws-sdk/client-ec2';
import type { Ec2Api } from './api.js';

/** The AMI a job boots, as described by EC2. */
export interface SelectedImage {
  imageId: string;
  /** The AMI's name (its id when it has none), for the job log's worker info. */
  name: string;
  /** Where the root volume attaches (`/dev/sda1`, `/dev/xvda`), for the disk size mapping. */
  rootDeviceName: string;
}

const AMI_ID = /^ami-[0-9a-f]{8,17}$/;
/** travis' images (and most Ubuntu AMIs) use this; only used if EC2 does not say. */
const DEFAULT_ROOT_DEVICE = '/dev/sda1';


/** The setting value (AMI id or name filter) for a job; throws `InstanceStartError` when nothing is configured. */
export function imageSetting(attributes: StartAttributes, images: Record<string, string>, imageDefault: string): string {
  const value = selectImageSetting(attributes, images, imageDefault).trim();
  if (value === '') {
    throw new InstanceStartError(`no image configured for language ${attributes.language}: set TRAVIS_WORKER_EC2_IMAGE_DEFAULT`, {
      userMessage: 'The worker has no image configured for this job.',
    });
  }
  return value;
}

function describe(image: Image): SelectedImage {
  return {
    imageId: image.ImageId as string,
    name: image.Name ?? (image.ImageId as string),
    rootDeviceName: image.RootDeviceName ?? DEFAULT_ROOT_DEVICE,
  };
}

/** Look the setting up in EC2. Throws `InstanceStartError` when no image matches; API errors as `CloudCallError`. */
export async function resolveImage(value: string, api: Ec2Api, owners: string[], signal: AbortSignal): Promise<SelectedImage> {
  if (AMI_ID.test(value)) {
    // The operator named this AMI: no owner restriction.
    const [image] = await api.describeImages({ ImageIds: [value] }, signal);
    if (image?.ImageId === undefined) throw new InstanceStartError(`AMI ${value} does not exist in this region`);
    return describe(image);
  }
  const images = await api.describeImages(
    {
      // Without an owner, a name filter would also match anyone's public AMI of that name.
      ...(owners.length > 0 ? { Owners: owners } : {}),
      Filters: [
        { Name: 'name', Values: [value] },
        { Name: 'state', Values: ['available'] },
      ],
    },
    signal,
  );
  const newest = images
    .filter((image) => image.ImageId !== undefined)
    .sort((a, b) => (b.CreationDate ?? '').localeCompare(a.CreationDate ?? ''))[0];
  if (newest === undefined) {
    throw new InstanceStartError(`no available AMI named like "${value}" owned by ${owners.join(', ') || 'anyone'}`);
  }
  return describe(newest);
}
