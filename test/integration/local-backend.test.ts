import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import type { ContainmentKind } from '../../backends/local/containment.js';
import { definition as local } from '../../backends/local/index.js';
import type { Backend, Instance } from '../../src/backend/contract.js';
import { StaleVmError } from '../../src/errors.js';
import { silentLogger } from '../../src/logger.js';
import { CollectingWritable } from '../helpers/collect.js';
import { testAttributes } from '../helpers/attributes.js';
import { testBackendContext } from '../helpers/backend-context.js';

const attributes = testAttributes();

let scriptsDir: string;
let backend: Backend;
const never = new AbortController().signal;

beforeAll(async () => {
  scriptsDir = await mkdtemp(join(tmpdir(), 'mayfly-local-test-'));
  backend = local.create({ scriptsDir, containment: 'auto' }, testBackendContext());
});
afterAll(async () => {
  await backend.close();
  await rm(scriptsDir, { recursive: true, force: true });
});

async function startWith(script: string, on = backend): Promise<Instance> {
  const instance = await on.start(attributes, { signal: never, progress: () => {}, logger: silentLogger, recordPhase: () => {} });
  await instance.upload(Buffer.from(script), { signal: never });
  return instance;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return !readFileSync(`/proc/${pid}/stat`, 'utf8').includes(') Z ');
  } catch {
    return false;
  }
}

/** Pids (as the host sees them) of the processes whose command line contains `token`. */
function processesWith(token: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(token) && isAlive(Number(entry))) pids.push(Number(entry));
    } catch {
      // Gone while we looked.
    }
  }
  return pids;
}

describe.each<ContainmentKind>(['cgroup', 'pid-namespace', 'session'])('local backend, contained by %s', (containment) => {
  let contained: Backend;
  /** Each test's processes are named after it (argv[0]), so they can be found from the host whatever their pid namespace. */
  let token: string;
  beforeAll(() => {
    contained = local.create({ scriptsDir, containment }, testBackendContext());
  });
  afterEach(() => {
    // A test that failed must not leave its processes behind.
    for (const pid of processesWith(token)) process.kill(pid, 'SIGKILL');
  });
  afterAll(() => contained.close());
  /**
   * Start `script`, in which each `[launcher %]` starts a sleep named after
   * the test through `launcher` (`setsid %`, a double fork, ...) and goes on
   * only once that sleep's shell runs (and so has left the session), so the
   * script can't exit before its children are where the test wants them.
   */
  const start = (script: string): Promise<Instance> => {
    token = `mayfly-test-${randomUUID()}`;
    let launched = 0;
    const text = script.replace(/\[([^\]]*)\]/g, (_, launcher: string) => {
      const fifo = `up${++launched}`;
      return `mkfifo ${fifo}; ${launcher.replace('%', `bash -c 'echo > ${fifo}; exec -a ${token} sleep 300'`)} read < ${fifo};`;
    });
    return startWith(text, contained);
  };

  it('kills background and setsid children when the run is stopped', async () => {
    const instance = await start('[% &] [setsid % &] echo ready; wait');
    const output = new CollectingWritable();
    const stop = new AbortController();
    const running = instance.run({ output, signal: stop.signal });
    await output.until('ready');
    await vi.waitFor(() => expect(processesWith(token)).toHaveLength(2));
    stop.abort(new Error('cancelled'));
    expect((await running).exitCode).toBeNull();
    await vi.waitFor(() => expect(processesWith(token)).toEqual([]));
    await instance.destroy();
  });

  it('ends a run stopped as it starts, before the script is in its container', async () => {
    const instance = await start('sleep 300; echo never');
    const output = new CollectingWritable();
    const stopped = AbortSignal.abort(new Error('cancelled'));
    expect((await instance.run({ output, signal: stopped })).exitCode).toBeNull();
    expect(output.text).not.toContain('never');
    await instance.destroy();
  });

  it('does not let a setsid child holding stdout keep the run open after the script exits', async () => {
    const instance = await start('[setsid % &] echo done');
    const output = new CollectingWritable();
    expect(await instance.run({ output, signal: never })).toEqual({ exitCode: 0 });
    expect(output.text).toBe('done\n');
    await instance.destroy();
  });

  it('ends a job whose children hold the pipes when it is stopped (hard timeout)', async () => {
    const instance = await start('[setsid % &] [(setsid % > /dev/null 2>&1 &);] echo ready; sleep 300');
    const output = new CollectingWritable();
    const stop = new AbortController();
    const running = instance.run({ output, signal: stop.signal });
    await output.until('ready');
    stop.abort(new Error('hard timeout'));
    expect((await running).exitCode).toBeNull();
    await instance.destroy();
    // The fallback can't find a daemon that left the process tree; the others end it.
    if (containment !== 'session') await vi.waitFor(() => expect(processesWith(token)).toEqual([]));
  });

  if (containment !== 'session') {
    it('leaves no double-forked daemon behind once the job has ended', async () => {
      const instance = await start('[(setsid % > /dev/null 2>&1 < /dev/null &);] echo started');
      const output = new CollectingWritable();
      expect(await instance.run({ output, signal: never })).toEqual({ exitCode: 0 });
      await instance.destroy();
      await vi.waitFor(() => expect(processesWith(token)).toEqual([]));
    });
  }
});

describe('local backend', () => {
  it.each([0, 1, 3])('reports exit status %i and the output of stdout and stderr in order', async (code) => {
    const instance = await startWith(`echo out; echo err >&2; echo more; exit ${code}`);
    const output = new CollectingWritable();
    const result = await instance.run({ output, signal: never });
    expect(result).toEqual({ exitCode: code });
    expect(output.text).toBe('out\nerr\nmore\n');
    await instance.destroy();
  });

  it('refuses a second script: the instance is stale', async () => {
    const instance = await startWith('true');
    await expect(instance.upload(Buffer.from('true'), { signal: never })).rejects.toBeInstanceOf(StaleVmError);
    await instance.destroy();
  });

  it('finishes a script that leaves a background process behind, and kills that process', async () => {
    const instance = await startWith('sleep 300 & echo $! > bg.pid; echo done');
    const output = new CollectingWritable();
    const result = await instance.run({ output, signal: never });
    expect(result).toEqual({ exitCode: 0 });
    const pid = Number(readFileSync(join(instance.id, 'bg.pid'), 'utf8'));
    await vi.waitFor(() => expect(isAlive(pid)).toBe(false));
    await instance.destroy();
  });

  it("does not hand the worker's environment (and its secrets) to the job", async () => {
    process.env.TRAVIS_WORKER_AMQP_URI = 'amqp://user:s3cret@broker';
    try {
      const instance = await startWith('env');
      const output = new CollectingWritable();
      await instance.run({ output, signal: never });
      expect(output.text).not.toContain('s3cret');
      expect(output.text).toContain(`HOME=${instance.id}`);
      await instance.destroy();
    } finally {
      delete process.env.TRAVIS_WORKER_AMQP_URI;
    }
  });

  it('retries a destroy that failed, and says what it could not remove', async () => {
    const instance = await startWith('touch stuck && chattr +i stuck');
    await instance.run({ output: new CollectingWritable(), signal: never });
    const stuck = join(instance.id, 'stuck');
    try {
      await expect(instance.destroy()).rejects.toThrow(`could not remove the job directory ${instance.id}: ${stuck} remain`);
      expect(existsSync(instance.id)).toBe(true);
    } finally {
      execFileSync('chattr', ['-i', stuck]);
    }
    await instance.destroy();
    expect(existsSync(instance.id)).toBe(false);
  });

  it('removes the job directory on destroy, and destroy is idempotent', async () => {
    const instance = await startWith('true');
    expect(existsSync(instance.id)).toBe(true);
    await instance.destroy();
    await instance.destroy();
    expect(existsSync(instance.id)).toBe(false);
  });
});
