/**
 * The real executable under real signals: built once into a temporary
 * directory (the repository's dist/ is left alone), run on the file queue
 * and the local backend, driven by SIGTERM as systemd and `docker stop`
 * drive it. Progress is read from its JSON log lines on stdout.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, onTestFailed } from 'vitest';
import { STAGES } from '../../src/queue/file/layout.js';
import { FakeImds } from '../fakes/imds-server.js';
import { fileAppears } from '../helpers/files.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
/** The debug port asks for the control API's credentials, on loopback too. */
const AUTH = 'ops:cli-pw';
const CREDENTIALS = { authorization: `Basic ${Buffer.from(AUTH).toString('base64')}` };
let build: string;
let base: string;
let child: ChildProcess | undefined;

beforeAll(async () => {
  build = await mkdtemp(join(tmpdir(), 'mayfly-build-'));
  // ESM output needs "type": "module"; packages resolve through the repository's node_modules.
  await writeFile(join(build, 'package.json'), JSON.stringify({ name: 'mayfly', version: '0.0.0-test', type: 'module' }));
  await symlink(join(ROOT, 'node_modules'), join(build, 'node_modules'));
  // Another engineer's half-written file may fail type checking; tsc still emits, and the run below tells.
  await promisify(execFile)(process.execPath, [join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json', '--outDir', build], {
    cwd: ROOT,
  }).catch(() => undefined);
  if (!existsSync(join(build, 'bin/mayfly.js'))) throw new Error('the build produced no bin/mayfly.js');
}, 120_000);

afterAll(async () => {
  await rm(build, { recursive: true, force: true });
});

beforeEach(async () => {
  base = await mkdtemp(join(tmpdir(), 'mayfly-cli-'));
  await mkdir(join(base, 'queue/builds', STAGES.created), { recursive: true });
});

afterEach(async () => {
  if (child && child.exitCode === null && child.signalCode === null) {
    child.kill('SIGKILL');
    await once(child, 'exit');
  }
  child = undefined;
  await rm(base, { recursive: true, force: true });
});

interface Running {
  process: ChildProcess;
  /** Resolves with the first log line whose `msg` matches. */
  logLine(msg: RegExp): Promise<Record<string, unknown>>;
  exit: Promise<number | null>;
}

function startCli(env: Record<string, string>): Running {
  const proc = spawn(process.execPath, [join(build, 'bin/mayfly.js')], {
    env: {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      TRAVIS_WORKER_QUEUE_TYPE: 'file',
      TRAVIS_WORKER_BASE_DIR: join(base, 'queue'),
      TRAVIS_WORKER_FILE_POLLING_INTERVAL: '100ms',
      TRAVIS_WORKER_FILE_ECHO_LOGS: 'false',
      TRAVIS_WORKER_PROVIDER_NAME: 'local',
      TRAVIS_WORKER_LOCAL_SCRIPTS_DIR: join(base, 'instances'),
      TRAVIS_WORKER_INITIAL_SLEEP: '0s',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  child = proc;
  const lines: Record<string, unknown>[] = [];
  onTestFailed(() => {
    console.log(`mayfly's log lines:\n${lines.map((line) => JSON.stringify(line)).join('\n')}`);
  });
  const waiters: Array<{ msg: RegExp; resolve: (line: Record<string, unknown>) => void }> = [];
  createInterface({ input: proc.stdout as NodeJS.ReadableStream }).on('line', (text) => {
    let line: Record<string, unknown>;
    try {
      line = JSON.parse(text) as Record<string, unknown>;
    } catch {
      return;
    }
    lines.push(line);
    for (const waiter of [...waiters]) {
      if (waiter.msg.test(String(line.msg))) {
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.resolve(line);
      }
    }
  });
  const exit = once(proc, 'exit').then(([code]) => code as number | null);
  return {
    process: proc,
    exit,
    logLine: (msg) =>
      new Promise((resolve, reject) => {
        const seen = lines.find((line) => msg.test(String(line.msg)));
        if (seen) return resolve(seen);
        waiters.push({ msg, resolve });
        void exit.then((code) => reject(new Error(`mayfly exited (${code}) before logging ${msg}`)));
      }),
  };
}

/** A job that marks it runs, then waits for `<base>/<id>.go`. */
async function enqueue(id: number): Promise<void> {
  const payload = {
    job: { id, number: `${id}.1` },
    repository: { id: 1, slug: 'octo/cli' },
    config: { language: 'shell', script: [`touch ${join(base, `${id}.running`)}`, `while [ ! -e ${join(base, `${id}.go`)} ]; do sleep 0.05; done`] },
  };
  await writeFile(join(base, 'queue/builds', STAGES.created, `${id}.json`), JSON.stringify(payload));
}

// A cold start of the whole CLI (every backend's SDK loaded from disk) on a
// busy two-core machine can take tens of seconds; the steps wait on events.
describe('mayfly under signals', { timeout: 120_000 }, () => {
  it('drains on SIGTERM: the running job finishes, then it exits 0', async () => {
    const cli = startCli({});
    await cli.logLine(/^worker started$/);
    await enqueue(1);
    await fileAppears(join(base, '1.running'));
    cli.process.kill('SIGTERM');
    await cli.logLine(/^draining/);
    await writeFile(join(base, '1.go'), '');
    expect(await cli.exit).toBe(0);
    expect(await readFile(join(base, 'queue/builds', STAGES.finished, '1.state'), 'utf8')).toBe('passed');
  });

  it('requeues the running job and exits 0 at once on a second SIGTERM', async () => {
    const cli = startCli({ TRAVIS_WORKER_SHUTDOWN_TIMEOUT: '10m' });
    await cli.logLine(/^worker started$/);
    await enqueue(2);
    await fileAppears(join(base, '2.running'));
    cli.process.kill('SIGTERM');
    await cli.logLine(/^draining/);
    cli.process.kill('SIGTERM');
    expect(await cli.exit).toBe(0);
    // Requeued: back in the created stage for the next worker.
    expect(existsSync(join(base, 'queue/builds', STAGES.created, '2.json'))).toBe(true);
  });

  it("requeues the running job and exits 0 before a spot notice's deadline", async () => {
    const imds = await FakeImds.start();
    try {
      const cli = startCli({
        AWS_EC2_METADATA_SERVICE_ENDPOINT: imds.endpoint,
        TRAVIS_WORKER_HOST_CLOUD: 'aws',
        TRAVIS_WORKER_HOST_NOTICE_POLL_INTERVAL: '50ms',
        TRAVIS_WORKER_HOST_NOTICE_MARGIN: '9s',
      });
      await cli.logLine(/^worker started$/);
      await enqueue(3);
      await fileAppears(join(base, '3.running'));
      // Whole seconds, as EC2 writes the time; the job gets at most one of them.
      const deadline = Math.floor(Date.now() / 1000) * 1000 + 10_000;
      imds.noticeSpot(new Date(deadline));
      expect(await cli.logLine(/^notice from the cloud$/)).toMatchObject({ notice: 'spot-interruption', deadline: new Date(deadline).toISOString() });
      expect(await cli.exit).toBe(0);
      expect(Date.now()).toBeLessThan(deadline);
      expect(existsSync(join(base, 'queue/builds', STAGES.created, '3.json'))).toBe(true);
    } finally {
      await imds.close();
    }
  });

  it('logs its status on SIGUSR1 and serves a heap snapshot on the debug port', async () => {
    const cli = startCli({ TRAVIS_WORKER_PPROF_PORT: '0', TRAVIS_WORKER_REMOTE_CONTROLLER_AUTH: AUTH });
    const debug = await cli.logLine(/^debug listener started$/);
    await cli.logLine(/^worker started$/);
    cli.process.kill('SIGUSR1');
    const status = await cli.logLine(/^received SIGUSR1$/);
    expect(status).toEqual(
      expect.objectContaining({ state: 'RUNNING', pool_size: 1, processed: 0, processors: [expect.objectContaining({ state: 'waiting', job_id: null })] }),
    );
    const snapshot = await fetch(`${String(debug.url)}/debug/heapsnapshot`, { headers: CREDENTIALS });
    const parsed = (await snapshot.json()) as { snapshot: { meta: { node_fields: string[] } }; nodes: number[] };
    expect(parsed.snapshot.meta.node_fields).toContain('name');
    expect(parsed.nodes.length).toBeGreaterThan(0);
    cli.process.kill('SIGINT');
    expect(await cli.exit).toBe(0);
  });

  it('writes one heap snapshot at a time: another request meanwhile gets 429', async () => {
    const cli = startCli({ TRAVIS_WORKER_PPROF_PORT: '0', TRAVIS_WORKER_REMOTE_CONTROLLER_AUTH: AUTH });
    const debug = await cli.logLine(/^debug listener started$/);
    const url = `${String(debug.url)}/debug/heapsnapshot`;
    // A slow reader: the headers are in, the body is left unread, so the snapshot stays in progress.
    const first = await fetch(url, { headers: CREDENTIALS });
    expect(first.status).toBe(200);
    const second = await fetch(url, { headers: CREDENTIALS });
    expect(second.status).toBe(429);
    expect(((await second.json()) as { error: string }).error).toBe('a heap snapshot is already being taken; try again when it is done');
    // Once the first has been read, the next one is served.
    expect(((await first.json()) as { nodes: number[] }).nodes.length).toBeGreaterThan(0);
    const third = await fetch(url, { headers: CREDENTIALS });
    expect(third.status).toBe(200);
    await third.body?.cancel();
    cli.process.kill('SIGINT');
    expect(await cli.exit).toBe(0);
  });
});
