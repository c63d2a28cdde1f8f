import type { StartAttributes } from '../backend/contract.js';
import type { WorkerConfig } from '../config/types.js';
import type { JobPayload } from './payload.js';

function configString(config: Record<string, unknown>, key: string): string | undefined {
  const value = config[key];
  return typeof value === 'string' && value !== '' ? value : undefined;
}

/**
 * What the backend is asked for, from the job's `config` and top-level
 * `vm_*` fields, with the worker's `TRAVIS_WORKER_DEFAULT_*` filling gaps
 * (as travis' StartAttributes.SetDefaults does).
 */
export function startAttributesOf(
  payload: JobPayload,
  defaults: WorkerConfig['defaults'],
  hardTimeoutMs: number,
): StartAttributes {
  const c = payload.config;
  const attributes: StartAttributes = {
    jobId: payload.jobId,
    repository: payload.repositorySlug,
    language: configString(c, 'language') ?? defaults.language,
    dist: configString(c, 'dist') ?? defaults.dist,
    arch: configString(c, 'arch') ?? defaults.arch,
    group: configString(c, 'group') ?? defaults.group,
    os: configString(c, 'os') ?? defaults.os,
    vmType: payload.vmType,
    vmConfig: { ...payload.vmConfig },
    hardTimeoutMs,
    warmer: payload.warmer,
  };
  const osxImage = configString(c, 'osx_image');
  if (osxImage) attributes.osxImage = osxImage;
  const imageName = configString(c, 'image_name');
  if (imageName) attributes.imageName = imageName;
  if (payload.vmSize) attributes.vmSize = payload.vmSize;
  return attributes;
}

/**
 * What a job that asks for nothing special gets: the worker's defaults, a
 * default VM. The fixed warm pool boots this shape before any job came.
 */
export function defaultStartAttributes(defaults: WorkerConfig['defaults'], hardTimeoutMs: number): StartAttributes {
  return { jobId: 0, repository: '', ...defaults, vmType: 'default', vmConfig: {}, hardTimeoutMs, warmer: false };
}
