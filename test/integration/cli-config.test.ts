/**
 * The executable as an operator meets it: `--help` lists the options that
 * work and says where the settings are documented; the worker log is
 * readable on a terminal. It refuses a bad configuration before doing
 * anything with it: `--echo-config` refuses what startup would refuse, and
 * startup stops before the broker is contacted. It takes travis-ci/worker's
 * command line and env file: settings as flags and plain names, the
 * commands from the environment. Run from the sources (ts-loader), on
 * loopback only.
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
  it('lists commands that each work, and says where the settings are documented', async () => {
    const { code, stdout } = await mayfly({}, ['--help']);
    expect(code).toBe(0);
    const options = new Set(stdout.match(/--[a-z-]+/g));
    const commands = ['--echo-config', '--help', '--list-backend-providers', '--version'];
    expect(commands.filter((command) => !options.has(command))).toEqual([]);
    // Each command exits 0 at once (none starts the worker); --help ran above.
    const others = commands.filter((option) => option !== '--help');
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
    expect(stderr).toMatch(/^mayfly: unknown flag --frobnicate.*; see --help\n$/s);
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

describe('mayfly with a travis-ci/worker command line and env file', { timeout: 60_000 }, () => {
  it('--help lists a flag for each setting', async () => {
    const { code, stdout } = await mayfly({}, ['--help']);
    expect(code).toBe(0);
    for (const flag of ['--amqp-uri=VALUE', '--pool-size=VALUE', '--provider-name=VALUE', '--debug\n', '--echo-config\n', '--strict-config\n']) {
      expect(stdout).toContain(`  ${flag}`);
    }
  });

  it('takes settings as flags, over the environment, and plain names', async () => {
    const { code, stdout } = await mayfly({ TRAVIS_WORKER_POOL_SIZE: '2', QUEUE_NAME: 'builds.plain' }, ['--pool-size=3', '--debug', '--echo-config']);
    expect(code).toBe(0);
    expect(stdout).toContain('export TRAVIS_WORKER_POOL_SIZE="3"\n');
    expect(stdout).toContain('export TRAVIS_WORKER_DEBUG="true"\n');
    expect(stdout).toContain('export TRAVIS_WORKER_QUEUE_NAME="builds.plain"\n');
  });

  it('echoes the config when TRAVIS_WORKER_ECHO_CONFIG=true, an unknown variable being no obstacle', async () => {
    const { code, stdout } = await mayfly({ TRAVIS_WORKER_ECHO_CONFIG: 'true', TRAVIS_WORKER_POOLSIZE: '3', TRAVIS_WORKER_LXD_CPUS: '2' });
    expect(code).toBe(0);
    expect(stdout).toContain('export TRAVIS_WORKER_POOL_SIZE="1"\n');
    expect(stdout).toContain('# set but not used by mayfly: TRAVIS_WORKER_LXD_CPUS TRAVIS_WORKER_POOLSIZE\n');
  });

  it('lists the backends when TRAVIS_WORKER_LIST_BACKEND_PROVIDERS=true', async () => {
    const { code, stdout } = await mayfly({ TRAVIS_WORKER_LIST_BACKEND_PROVIDERS: 'true' });
    expect(code).toBe(0);
    expect(stdout).toContain('TRAVIS_WORKER_GCE_PROJECT_ID');
  });

  it('refuses an unknown flag, naming the closest one', async () => {
    const { code, stderr } = await mayfly({}, ['--pool-sise=3', '--echo-config']);
    expect(code).toBe(2);
    expect(stderr).toBe('mayfly: unknown flag --pool-sise (did you mean --pool-size?); see --help\n');
  });
});
