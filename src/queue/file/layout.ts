/**
 * Where things are in a file queue: the stage directories a job file moves
 * through, and the names of the files kept beside it.
 */
import { createHash } from 'node:crypto';

/**
 * The longest file name, in bytes, that Linux file systems take (NAME_MAX:
 * ext4, xfs, btrfs, tmpfs).
 */
const NAME_MAX_BYTES = 255;

/** Files kept beside a job's `<id>.json`, named `<id><suffix>`. */
/** `.state.tmp`: the state being written, renamed to `.state` once whole. */
type SiblingSuffix = '.state' | '.state.tmp' | '.error' | '.log';
const SIBLING_SUFFIXES: readonly SiblingSuffix[] = ['.state', '.state.tmp', '.error', '.log'];

/**
 * The longest job file name accepted: `<id>.json` whose every sibling
 * (`<id>.state.tmp`, the longest) still fits in NAME_MAX. A longer name would
 * run its job and then fail to record the outcome, so the job would run again.
 */
export const MAX_JOB_FILE_NAME_BYTES = NAME_MAX_BYTES - Math.max(...SIBLING_SUFFIXES.map((suffix) => Buffer.byteLength(suffix))) + '.json'.length;

/** Whether a name in `10-created.d` is a job file (`<id>.json`); other files there are left alone. */
export function isJobFileName(name: string): boolean {
  return name.endsWith('.json');
}

/** The name of the file kept beside job file `name` (`<id>.json`). */
export function sibling(name: string, suffix: SiblingSuffix): string {
  return name.replace(/\.json$/, suffix);
}

/** The directories a job file moves through, in order (as travis names them). */
export const STAGES = {
  created: '10-created.d',
  received: '30-received.d',
  started: '50-started.d',
  finished: '70-finished.d',
} as const;
export type Stage = keyof typeof STAGES;

/** `name` cut to fit MAX_JOB_FILE_NAME_BYTES, kept distinct from other cut names by a hash of the whole. */
export function shortenedName(name: string): string {
  const tag = `-${createHash('sha256').update(name).digest('hex').slice(0, 12)}.json`;
  let stem = name.slice(0, -'.json'.length);
  while (Buffer.byteLength(stem) + tag.length > MAX_JOB_FILE_NAME_BYTES) stem = stem.slice(0, -1);
  return stem + tag;
}
