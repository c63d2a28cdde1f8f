/** Reading a claimed job file without trusting what it is. */
import { constants, type Stats } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { errorMessage } from '../../errors.js';

export type JobFileRead = { kind: 'read'; body: Buffer; mtimeMs: number } | { kind: 'refused'; reason: string };

/** Open errors that say the entry itself is unusable (rather than the worker short of resources). */
const UNUSABLE_ENTRY_CODES = new Set(['ELOOP', 'EACCES', 'EPERM', 'ENXIO']);

/**
 * Read a job file without trusting it: a symbolic link is not followed, and
 * anything but a regular file (a FIFO, a device, a directory) is refused
 * without being read, as is one over `maxBytes`. The checks are made on the
 * opened descriptor (O_NONBLOCK so that opening a FIFO can't wait for a
 * writer), so the entry can't be swapped between check and read.
 */
export async function readJobFile(path: string, maxBytes: number): Promise<JobFileRead> {
  let handle: FileHandle;
  try {
    handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? '';
    if (!UNUSABLE_ENTRY_CODES.has(code)) throw err;
    return { kind: 'refused', reason: code === 'ELOOP' ? 'job file is a symbolic link, not a regular file' : `job file can't be opened: ${errorMessage(err)}` };
  }
  try {
    const info = await handle.stat();
    if (!info.isFile()) return { kind: 'refused', reason: `job file is ${describeFileType(info)}, not a regular file` };
    const tooLarge = { kind: 'refused', reason: `job file is over the ${maxBytes}-byte limit for a payload` } as const;
    if (info.size > maxBytes) return tooLarge;
    // The size may have changed since fstat: read one byte past the limit to know.
    const body = await readAtMost(handle, maxBytes + 1);
    return body.byteLength > maxBytes ? tooLarge : { kind: 'read', body, mtimeMs: info.mtimeMs };
  } finally {
    await handle.close();
  }
}

function describeFileType(info: Stats): string {
  if (info.isDirectory()) return 'a directory';
  if (info.isFIFO()) return 'a FIFO';
  if (info.isSocket()) return 'a socket';
  if (info.isCharacterDevice() || info.isBlockDevice()) return 'a device';
  return 'not a regular file';
}

/** The first `limit` bytes of `handle` (fewer at end of file), whatever its size says. */
async function readAtMost(handle: FileHandle, limit: number): Promise<Buffer> {
  const buffer = Buffer.allocUnsafe(limit);
  let filled = 0;
  while (filled < limit) {
    const { bytesRead } = await handle.read(buffer, filled, limit - filled, null);
    if (bytesRead === 0) break;
    filled += bytesRead;
  }
  return buffer.subarray(0, filled);
}
