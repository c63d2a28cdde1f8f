/**
 * The tags every job instance (and its volume) carries from the moment it
 * exists (set in RunInstances, never by a later CreateTags): which job,
 * which repository, which worker, and until when it may live, so an
 * operator or a reaper can tell a leaked instance from a busy one.
 */
import type { StartAttributes } from '../../src/backend/kit.js';
import type { Tag } from './settings.js';

/**
 * How long past its hard limit an instance may still be legitimately alive:
 * boot (STARTUP_TIMEOUT, 4 min by default), upload (SCRIPT_UPLOAD_TIMEOUT,
 * 3.5 min), and the final log flush and termination. Rounded up generously.
 */
export const LEASE_MARGIN_MS = 15 * 60_000;

export const TAG_JOB_ID = 'travis.job_id';
export const TAG_REPO = 'travis.repo';
export const TAG_WORKER = 'travis.worker';
export const TAG_LEASE_EXPIRES = 'travis.lease_expires';

export interface TagInput {
  name: string;
  attributes: StartAttributes;
  /** The worker's host name. */
  hostname: string;
  /** When the instance is launched (ms since the epoch). */
  createdAt: number;
  custom: readonly Tag[];
}

/** The lease expiry: created + hard limit + margin, in ms since the epoch. */
export function leaseExpiry(createdAt: number, hardTimeoutMs: number): number {
  return createdAt + hardTimeoutMs + LEASE_MARGIN_MS;
}

/** EC2 tag values are at most 256 characters. */
const clip = (value: string): string => value.slice(0, 256);

export function jobTags({ name, attributes, hostname, createdAt, custom }: TagInput): Tag[] {
  const [org = '', repo = ''] = attributes.repository.split('/');
  const ours: Tag[] = [
    { Key: 'Name', Value: name },
    { Key: TAG_JOB_ID, Value: String(attributes.jobId) },
    { Key: TAG_REPO, Value: clip(attributes.repository) },
    // travis' ec2 backend tags these too; dashboards built on them keep working.
    { Key: 'travis.github_org', Value: clip(org) },
    { Key: 'travis.github_repo', Value: clip(repo) },
    { Key: 'travis.dist', Value: clip(attributes.dist) },
    { Key: TAG_WORKER, Value: clip(hostname) },
    { Key: TAG_LEASE_EXPIRES, Value: new Date(leaseExpiry(createdAt, attributes.hardTimeoutMs)).toISOString() },
  ];
  // An operator's tag never replaces ours: a reaper relies on them.
  const taken = new Set(ours.map((tag) => tag.Key));
  return [...ours, ...custom.filter((tag) => !taken.has(tag.Key))];
}
