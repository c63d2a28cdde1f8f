/**
 * The executable as an operator meets it: `--help` lists the options that
 * work and says where the settings are documented; the worker log is
 * readable on a terminal. And it refuses a bad configuration before doing
 * anything with it: `--echo-config` refuses what startup would refuse, and
 * startup stops before the broker is contacted. Run from the sources
 * (ts-loader), on loopback only.
 */
import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
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

describe('mayfly --help', { timeout: 120_000 }, () => {
  it('lists options that each work, and says where the settings are documented', async () => {
    const { code, stdout } = await mayfly({}, ['--help']);
    expect(code).toBe(0);
    const options = [...new Set(stdout.match(/--[a-z-]+/g))].sort();
    expect(options).toEqual(['--echo-config', '--help', '--list-backend-providers', '--version']);
    // Each one it lists exits 0 at once (none starts the worker); --help ran above.
    const others = options.filter((option) => option !== '--help');
    const codes = await Promise.all(others.map(async (option) => [option, (await mayfly({}, [option])).code]));
    expect(codes).toEqual(others.map((option) => [option, 0]));
    for (const doc of ['docs/configuration.md', 'config.example.env', 'docs/operations.md']) {
      expect(stdout).toContain(doc);
      expect(existsSync(join(ROOT, doc))).toBe(true);
    }
  });

  it('refuses an option it does not have, pointing at --help', async () => {
    const { code, stderr } = await mayfly({}, ['--frobnicate']);
    expect(code).toBe(2);
    expect(stderr).toMatch(/^mayfly: Unknown option '--frobnicate'.*\(mayfly --help lists the options\)\n$/s);
  });
});

describe('the worker log on a terminal', { timeout: 60_000 }, () => {
  it('is human-readable lines, not JSON', async () => {
    const base = await mkdtemp(join(tmpdir(), 'mayfly-tty-'));
    const command = [process.execPath, '--import', join(ROOT, 'test/helpers/ts-loader.mjs'), join(ROOT, 'bin/mayfly.ts')].join(' ');
    // script(1) runs the worker with a terminal as its stdout (util-linux; essential on Debian).
    const child = spawn('script', ['--quiet', '--flush', '--return', '--command', command, '/dev/null'], {
      cwd: ROOT,
      detached: true,
      stdio: ['pipe', 'pipe', 'inherit'],
      env: {
        PATH: process.env.PATH ?? '/usr/bin:/bin',
        TERM: 'xterm',
        TRAVIS_WORKER_QUEUE_TYPE: 'file',
        TRAVIS_WORKER_BASE_DIR: base,
        TRAVIS_WORKER_PROVIDER_NAME: 'local',
        TRAVIS_WORKER_LOCAL_SCRIPTS_DIR: join(base, 'scripts'),
      },
    });
    try {
      let output = '';
      for await (const chunk of child.stdout) {
        output += String(chunk);
        if (output.includes('worker started')) break;
      }
      // eslint-disable-next-line no-control-regex
      const line = output.replace(/\x1b\[[0-9;]*m/g, '').split(/\r?\n/).find((l) => l.includes('worker started')) ?? '';
      expect(line).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] INFO \(\d+\): worker started$/);
    } finally {
      // The whole group: script and the worker under it (SIGTERM drains an idle worker at once).
      process.kill(-(child.pid as number), 'SIGTERM');
      if (child.exitCode === null) await once(child, 'exit');
      await rm(base, { recursive: true, force: true });
    }
  });
});

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
