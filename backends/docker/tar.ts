/**
 * A tar archive of one regular file, built in memory: what the Engine API's
 * archive endpoint (`PUT /containers/{id}/archive`) takes to put a build
 * script or an `authorized_keys` file into a container. POSIX ustar, the
 * format every docker version extracts; no dependency for 512-byte headers.
 */

const BLOCK = 512;
/** ustar's name field; longer paths are split into prefix (155) and name. */
const NAME_LENGTH = 100;
const PREFIX_LENGTH = 155;
/** The size field holds 11 octal digits: 8 GiB - 1. Scripts are far smaller. */
const MAX_SIZE = 8 ** 11 - 1;

export interface TarFile {
  /** Path inside the archive, relative (a leading `/` is dropped, as tar does). */
  name: string;
  data: Buffer;
  /** Permission bits, e.g. 0o755. */
  mode: number;
  /** Owner as stored in the archive; the engine applies them when it extracts. Default 0 (root). */
  uid?: number;
  gid?: number;
  /** Modification time, seconds since the epoch; default now. */
  mtime?: number;
}

/** Write `value` as zero-padded octal with a terminating NUL into `field` bytes at `offset`. */
function octal(header: Buffer, offset: number, field: number, value: number): void {
  header.write(value.toString(8).padStart(field - 1, '0') + '\0', offset, field, 'ascii');
}

/** Split a path so it fits ustar's name and prefix fields; throws when it can't. */
function splitName(path: string): { name: string; prefix: string } {
  if (Buffer.byteLength(path) <= NAME_LENGTH) return { name: path, prefix: '' };
  for (let slash = path.indexOf('/'); slash !== -1; slash = path.indexOf('/', slash + 1)) {
    const prefix = path.slice(0, slash);
    const name = path.slice(slash + 1);
    if (Buffer.byteLength(prefix) <= PREFIX_LENGTH && Buffer.byteLength(name) <= NAME_LENGTH) return { name, prefix };
  }
  throw new Error(`tar: path too long for a ustar header: ${path}`);
}

/** The archive: one header, the data padded to a block, two empty blocks. */
export function tarFile(file: TarFile): Buffer {
  const path = file.name.replace(/^\/+/, '');
  if (path === '' || path.endsWith('/')) throw new Error(`tar: not a file name: ${JSON.stringify(file.name)}`);
  if (file.data.length > MAX_SIZE) throw new Error(`tar: ${path} is too large (${file.data.length} bytes)`);
  const { name, prefix } = splitName(path);
  const header = Buffer.alloc(BLOCK);
  header.write(name, 0, NAME_LENGTH, 'utf8');
  octal(header, 100, 8, file.mode & 0o7777);
  octal(header, 108, 8, file.uid ?? 0);
  octal(header, 116, 8, file.gid ?? 0);
  octal(header, 124, 12, file.data.length);
  octal(header, 136, 12, Math.floor(file.mtime ?? Date.now() / 1000));
  header.write('0', 156, 1, 'ascii'); // regular file
  header.write('ustar\0', 257, 6, 'ascii');
  header.write('00', 263, 2, 'ascii');
  header.write(prefix, 345, PREFIX_LENGTH, 'utf8');
  // The checksum is computed with its own field read as eight spaces.
  header.fill(' ', 148, 156);
  let sum = 0;
  for (const byte of header) sum += byte;
  header.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8, 'ascii');
  const padding = (BLOCK - (file.data.length % BLOCK)) % BLOCK;
  return Buffer.concat([header, file.data, Buffer.alloc(padding + 2 * BLOCK)]);
}
