/**
 * The debug port of a running worker (file queue, fake backend): the CPU
 * and heap profiles are pprof protobuf that decodes, the diagnostic report
 * is what its readers expect and carries no secret, /metrics answers, and
 * every route asks for the control API's credentials, on loopback too; the
 * control API serves the same profiles behind its auth.
 * (The heap snapshot is taken from the spawned CLI in cli-signals.test.ts:
 * a test runner's heap is big.)
 */
import { pbkdf2Sync } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { decodePprof } from '../helpers/pprof.js';
import { runTool, type ToolRun } from '../helpers/tools.js';
import { startTestWorker, type TestWorker } from '../helpers/worker.js';

const AUTH = 'ops:debug-pw-s3cr3t';
/** What `go tool pprof http://ops:...@host/...` sends. */
const CREDENTIALS = { authorization: `Basic ${Buffer.from(AUTH).toString('base64')}` };

let base: string;
let worker: TestWorker | undefined;

beforeEach(async () => {
  base = await mkdtemp(join(tmpdir(), 'mayfly-debug-'));
});
afterEach(async () => {
  await worker?.stop();
  worker = undefined;
  await rm(base, { recursive: true, force: true });
});

async function launch(env: Record<string, string>): Promise<TestWorker> {
  worker = await startTestWorker({
    TRAVIS_WORKER_QUEUE_TYPE: 'file',
    TRAVIS_WORKER_BASE_DIR: base,
    TRAVIS_WORKER_PROVIDER_NAME: 'fake',
    TRAVIS_WORKER_REMOTE_CONTROLLER_AUTH: AUTH,
    ...env,
  });
  return worker;
}

/** A worker with its debug port; its URL. */
async function start(env: Record<string, string> = {}): Promise<string> {
  const url = (await launch({ TRAVIS_WORKER_PPROF_PORT: '0', ...env })).worker.debugUrl;
  if (url === undefined) throw new Error('no debug port');
  return url;
}

/** A worker with the control API and no debug port; the control API's URL. */
async function startControl(env: Record<string, string> = {}): Promise<string> {
  const url = (await launch({ TRAVIS_WORKER_REMOTE_CONTROLLER_ADDR: '127.0.0.1:0', ...env })).worker.controlUrl;
  if (url === undefined) throw new Error('no control API');
  return url;
}

/** Keep the profiled process busy until `until` settles, so samples land in JS frames (pbkdf2Sync) whatever else runs. */
async function busyUntil<T>(until: Promise<T>): Promise<T> {
  let settled = false;
  void until.finally(() => (settled = true)).catch(() => undefined);
  while (!settled) {
    pbkdf2Sync('password', 'salt', 2_000, 32, 'sha256');
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
  return until;
}

/** `go tool pprof -top` on a profile of the debug port, fetched with the control credentials in the URL, as docs/security.md shows. */
async function pprofTop(url: string, path: string, workDir: string): Promise<ToolRun> {
  const withCredentials = url.replace('http://', `http://${AUTH}@`);
  // pprof keeps a copy of each profile it fetches under PPROF_TMPDIR (default ~/pprof): here, the test's own directory.
  return runTool('go', ['tool', 'pprof', '-top', `${withCredentials}${path}`], {
    env: { ...process.env, PPROF_TMPDIR: workDir, HOME: workDir },
  });
}

async function bytes(response: Response): Promise<Buffer> {
  return Buffer.from(await response.arrayBuffer());
}

describe('debug port', () => {
  it('serves a CPU profile in gzipped pprof format, as go tool pprof fetches it', async () => {
    const url = await start();
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const response = await busyUntil(fetch(`${url}/debug/pprof/profile?seconds=1`, { headers: CREDENTIALS }));
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toBe('application/octet-stream');
    const body = await bytes(response);
    expect([body[0], body[1]]).toEqual([0x1f, 0x8b]);
    const profile = decodePprof(body);
    expect(profile.stringTable[0]).toBe('');
    expect(profile.sampleTypes).toContainEqual(['wall', 'nanoseconds']);
    expect(profile.periodType).toEqual(['wall', 'nanoseconds']);
    expect(profile.sampleCount).toBeGreaterThan(0);
    expect(profile.functionNames).toContain('pbkdf2Sync');
  });

  it('gives go tool pprof a CPU profile it reads, with the functions that ran', async () => {
    const url = await start();
    const { code, stdout } = await busyUntil(pprofTop(url, '/debug/pprof/profile?seconds=1', base));
    expect(code).toBe(0);
    expect(stdout).toMatch(/^Type: wall$/m);
    expect(stdout).toMatch(/^\s*flat\s+flat%\s+sum%\s+cum\s+cum%$/m);
    expect(stdout).toMatch(/ pbkdf2Sync$/m);
  });

  it('gives go tool pprof a heap profile it reads', async () => {
    const url = await start();
    const { code, stdout } = await pprofTop(url, '/debug/pprof/heap', base);
    expect(code).toBe(0);
    expect(stdout).toMatch(/^Type: inuse_space$/m);
    expect(stdout).toMatch(/^Showing nodes accounting for [\d.]+[kMG]?B, [\d.]+% of [\d.]+[kMG]?B total$/m);
  });

  it('refuses a profile length it would not take', async () => {
    const url = await start();
    const response = await fetch(`${url}/debug/pprof/profile?seconds=abc`, { headers: CREDENTIALS });
    expect(response.status).toBe(400);
    expect(((await response.json()) as { error: string }).error).toMatch(/^seconds: /);
  });

  it('serves a heap profile in gzipped pprof format', async () => {
    const url = await start();
    const response = await fetch(`${url}/debug/pprof/heap`, { headers: CREDENTIALS });
    expect(response.status).toBe(200);
    const profile = decodePprof(await bytes(response));
    expect(profile.sampleTypes).toEqual([
      ['inuse_objects', 'count'],
      ['inuse_space', 'bytes'],
    ]);
  });

  it('dumps stacks and async activity', async () => {
    const url = await start();
    const dump = (await (await fetch(`${url}/debug/report`, { headers: CREDENTIALS })).json()) as {
      activeResources: string[];
      report: { javascriptStack: unknown; libuv: { type: string }[] };
    };
    expect(dump.report.javascriptStack).toBeDefined();
    expect(dump.report.libuv.some((handle) => handle.type === 'tcp')).toBe(true);
    expect(dump.activeResources.length).toBeGreaterThan(0);
  });

  it('serves /metrics', async () => {
    const url = await start();
    const text = await (await fetch(`${url}/metrics`, { headers: CREDENTIALS })).text();
    expect(text).toMatch(/^mayfly_pool_size 1$/m);
    expect(text).toMatch(/^mayfly_broker_connected\{queue="file"\} 1$/m);
  });

  it('asks for credentials on loopback too, on every route', async () => {
    const url = await start();
    for (const path of ['/debug/pprof/', '/debug/pprof/heap', '/debug/pprof/profile?seconds=1', '/debug/heapsnapshot', '/debug/report', '/metrics']) {
      const anonymous = await fetch(`${url}${path}`);
      expect([path, anonymous.status, anonymous.headers.get('www-authenticate')]).toEqual([path, 401, 'Basic realm="mayfly"']);
      const wrong = await fetch(`${url}${path}`, { headers: { authorization: `Basic ${Buffer.from('ops:guess').toString('base64')}` } });
      expect([path, wrong.status]).toEqual([path, 403]);
    }
    expect((await fetch(`${url}/debug/pprof/`, { headers: CREDENTIALS })).status).toBe(200);
  });

  it('hands out a report without the environment or the command line', async () => {
    process.env.MAYFLY_REPORT_PROBE = 'env-probe-s3cr3t';
    try {
      const url = await start();
      const text = await (await fetch(`${url}/debug/report`, { headers: CREDENTIALS })).text();
      const { report } = JSON.parse(text) as { report: Record<string, unknown> & { header: Record<string, unknown> } };
      expect(report.environmentVariables).toBeUndefined();
      expect(report.header.commandLine).toBeUndefined();
      expect(report.header.nodejsVersion).toBe(process.version);
      expect(text).not.toContain('s3cr3t');
    } finally {
      delete process.env.MAYFLY_REPORT_PROBE;
    }
  });

  it('serves without credentials only when opted in, on loopback, and never the heap snapshot', async () => {
    const url = await start({ TRAVIS_WORKER_REMOTE_CONTROLLER_AUTH: '', TRAVIS_WORKER_PPROF_NO_AUTH: 'true' });
    expect((await fetch(`${url}/metrics`)).status).toBe(200);
    expect((await fetch(`${url}/debug/report`)).status).toBe(200);
    const snapshot = await fetch(`${url}/debug/heapsnapshot`);
    expect(snapshot.status).toBe(403);
    expect(((await snapshot.json()) as { error: string }).error).toMatch(/secrets included: set TRAVIS_WORKER_REMOTE_CONTROLLER_AUTH/);
  });
});

describe('profiler on the control API', () => {
  it('serves the profiles where travis serves pprof, behind the controller auth', async () => {
    const url = await startControl();
    for (const path of ['/debug/pprof/', '/debug/pprof/heap', '/debug/report']) {
      const anonymous = await fetch(`${url}${path}`);
      expect([path, anonymous.status]).toEqual([path, 401]);
    }
    const heap = await fetch(`${url}/debug/pprof/heap`, { headers: CREDENTIALS });
    expect(heap.status).toBe(200);
    expect(decodePprof(await bytes(heap)).sampleTypes).toContainEqual(['inuse_space', 'bytes']);
    expect((await fetch(`${url}/debug/pprof/`, { headers: CREDENTIALS })).status).toBe(200);
  });

  it('refuses the profiles when the controller has no credentials', async () => {
    const url = await startControl({ TRAVIS_WORKER_REMOTE_CONTROLLER_AUTH: '' });
    expect((await fetch(`${url}/debug/pprof/heap`)).status).toBe(403);
  });
});
