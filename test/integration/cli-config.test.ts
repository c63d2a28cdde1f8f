/**
 * The executable refuses a bad configuration before doing anything with it:
 * `--echo-config` refuses what startup would refuse, and startup stops
 * before the broker is contacted. Run from the sources (ts-loader), on
 * loopback only.
 */
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

interface Exit {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `mayfly` with only `env` (and PATH) and `args`, to its exit. */
function mayfly(env: Record<string, string>, args: string[] = []): Promise<Exit> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', join(ROOT, 'test/helpers/ts-loader.mjs'), join(ROOT, 'bin/mayfly.ts'), ...args],
      { cwd: ROOT, env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env } },
      (err, stdout, stderr) => resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : null, stdout, stderr }),
    );
  });
}

/** Refused: not base64. */
const BAD_USER_DATA = 'not base64!';

let listener: Server | undefined;
afterEach(async () => {
  listener?.close();
  if (listener?.listening) await once(listener, 'close');
  listener = undefined;
});

describe('mayfly with a bad backend setting', { timeout: 60_000 }, () => {
  it('--echo-config refuses TRAVIS_WORKER_EC2_USER_DATA that startup would refuse, naming it', async () => {
    const { code, stdout, stderr } = await mayfly(
      { TRAVIS_WORKER_PROVIDER_NAME: 'ec2', TRAVIS_WORKER_EC2_USER_DATA: BAD_USER_DATA, TRAVIS_WORKER_EC2_CUSTOM_TAGS: 'novalue' },
      ['--echo-config'],
    );
    expect(code).toBe(2);
    expect(stdout).toBe('');
    expect(stderr).toContain('TRAVIS_WORKER_EC2_USER_DATA: is not base64');
    expect(stderr).toContain('TRAVIS_WORKER_EC2_CUSTOM_TAGS: "novalue" is not key=value');
  });

  it('stops before it contacts the broker', async () => {
    const connections: string[] = [];
    listener = createServer((socket) => {
      connections.push(`${socket.remoteAddress}:${socket.remotePort}`);
      socket.destroy();
    });
    listener.listen(0, '127.0.0.1');
    await once(listener, 'listening');
    const { port } = listener.address() as AddressInfo;

    const { code, stderr } = await mayfly({
      TRAVIS_WORKER_QUEUE_TYPE: 'amqp',
      TRAVIS_WORKER_AMQP_URI: `amqp://guest:guest@127.0.0.1:${port}`,
      TRAVIS_WORKER_PROVIDER_NAME: 'ec2',
      TRAVIS_WORKER_EC2_USER_DATA: BAD_USER_DATA,
    });
    expect(stderr).toContain('TRAVIS_WORKER_EC2_USER_DATA: is not base64');
    expect(code).toBe(2);
    expect(connections).toEqual([]);
  });
});
