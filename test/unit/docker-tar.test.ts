import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { tarFile } from '../../backends/docker/tar.js';

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

/** What GNU tar makes of the archive: extracted into a fresh directory. */
function extract(archive: Buffer): string {
  const dir = mkdtempSync(join(tmpdir(), 'mayfly-tar-'));
  dirs.push(dir);
  execFileSync('tar', ['-x', '-C', dir, '--no-same-owner'], { input: archive });
  return dir;
}

function field(header: Buffer, offset: number, length: number): string {
  return header.subarray(offset, offset + length).toString('ascii').replace(/\0.*$/s, '');
}

describe('one-file tar writer', () => {
  it('writes a ustar header tar accepts, with a correct checksum, mode, size and owner', () => {
    const data = Buffer.from('echo hello\n');
    const archive = tarFile({ name: '/home/travis/build.sh', data, mode: 0o755, uid: 1000, gid: 1000, mtime: 1_700_000_000 });
    expect(archive.length % 512).toBe(0);
    // Header, one data block, two end blocks.
    expect(archive.length).toBe(512 * 4);
    const header = archive.subarray(0, 512);
    expect(field(header, 0, 100)).toBe('home/travis/build.sh');
    expect(parseInt(field(header, 100, 8), 8)).toBe(0o755);
    expect(parseInt(field(header, 108, 8), 8)).toBe(1000);
    expect(parseInt(field(header, 124, 12), 8)).toBe(data.length);
    expect(parseInt(field(header, 136, 12), 8)).toBe(1_700_000_000);
    expect(field(header, 257, 6)).toBe('ustar');
    const stored = parseInt(field(header, 148, 8), 8);
    const blank = Buffer.from(header);
    blank.fill(' ', 148, 156);
    expect(stored).toBe(blank.reduce((sum, byte) => sum + byte, 0));
    expect(archive.subarray(512 + data.length).every((byte) => byte === 0)).toBe(true);

    const dir = extract(archive);
    const file = join(dir, 'home/travis/build.sh');
    expect(readFileSync(file, 'utf8')).toBe('echo hello\n');
    expect(statSync(file).mode & 0o777).toBe(0o755);
    expect(execFileSync('tar', ['-tv'], { input: archive }).toString()).toMatch(/^-rwxr-xr-x 1000\/1000\s+11 .* home\/travis\/build\.sh\n$/);
  });

  it('pads data of any length to whole blocks, including empty and exactly one block', () => {
    for (const size of [0, 1, 511, 512, 513, 100_000]) {
      const data = Buffer.alloc(size, 'a');
      const archive = tarFile({ name: 'f', data, mode: 0o644 });
      expect(archive.length).toBe(512 + Math.ceil(size / 512) * 512 + 1024);
      expect(readFileSync(join(extract(archive), 'f')).equals(data)).toBe(true);
    }
  });

  it('splits a long path into the prefix field', () => {
    const name = `${'d'.repeat(90)}/${'e'.repeat(60)}/script.sh`;
    const dir = extract(tarFile({ name, data: Buffer.from('x'), mode: 0o600 }));
    expect(readFileSync(join(dir, name), 'utf8')).toBe('x');
  });

  it('refuses what it cannot write', () => {
    expect(() => tarFile({ name: '', data: Buffer.alloc(0), mode: 0o644 })).toThrow(/not a file name/);
    expect(() => tarFile({ name: 'dir/', data: Buffer.alloc(0), mode: 0o644 })).toThrow(/not a file name/);
    expect(() => tarFile({ name: 'x'.repeat(300), data: Buffer.alloc(0), mode: 0o644 })).toThrow(/too long/);
  });
});
