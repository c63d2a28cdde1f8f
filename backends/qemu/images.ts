/**
 * Which golden image a job boots: its `image_name` (a file in IMAGE_DIR),
 * else the first `IMAGE_<KEY>` of the image keys every backend uses (most
 * specific first), else `IMAGE_DEFAULT`. The image is only ever read: each
 * job writes to its own copy-on-write overlay.
 */
import { access, constants } from 'node:fs/promises';
import { basename } from 'node:path';
import { imageCandidateKeys, InstanceStartError, PayloadError, type StartAttributes } from '../../src/backend/kit.js';
import { imagePath } from './settings.js';

/** A job may name an image file in IMAGE_DIR, never a path out of it. */
const IMAGE_FILE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$/;

export interface SelectedImage {
  path: string;
  /** For the job log and the worker-info fold: the file's name. */
  name: string;
}

export async function selectImage(
  attributes: Pick<StartAttributes, 'language' | 'dist' | 'group' | 'os' | 'osxImage' | 'imageName'>,
  images: Readonly<Record<string, string>>,
  imageDir: string,
): Promise<SelectedImage> {
  let path: string | undefined;
  let source: string;
  if (attributes.imageName !== undefined) {
    if (!IMAGE_FILE_NAME.test(attributes.imageName)) {
      throw new PayloadError('config.image_name', `${JSON.stringify(attributes.imageName)} is not the file name of an image`);
    }
    path = imagePath(imageDir, attributes.imageName);
    source = 'config.image_name';
  } else {
    const key = [...imageCandidateKeys(attributes), 'default'].find((candidate) => (images[candidate] ?? '') !== '');
    if (key === undefined) {
      throw new InstanceStartError('no image for this job: set TRAVIS_WORKER_QEMU_IMAGE_DEFAULT (or IMAGE_<LANGUAGE>) to a qcow2 image');
    }
    path = imagePath(imageDir, images[key] as string);
    source = `TRAVIS_WORKER_QEMU_IMAGE_${key.toUpperCase()}`;
  }
  try {
    await access(path, constants.R_OK);
  } catch {
    throw new InstanceStartError(`image ${path} (from ${source}) does not exist or cannot be read`, {
      userMessage: `The VM image "${basename(path)}" is not available on this worker; the job will be run again.`,
    });
  }
  return { path, name: basename(path) };
}
