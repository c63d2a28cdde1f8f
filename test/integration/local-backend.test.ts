import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
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
  backend = local.create({ scriptsDir }, testBackendContext());
});
afterAll(async () => {
  await backend.close();
  await rm(scriptsDir, { recursive: true, force: true });
});

async function startWith(script: string): Promise<Instance> {
  const instance = await backend.start(attributes, { signal: never, progress: () => {}, logger: silentLogger, recordPhase: () => {} });
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

  it('kills the whole process tree, even processes in a new session, when the run is stopped', async () => {
    const instance = await startWith('sleep 300 & echo $! > bg.pid; setsid sleep 300 & echo $! > sid.pid; echo ready; wait');
    const output = new CollectingWritable();
    const stop = new AbortController();
    const running = instance.run({ output, signal: stop.signal });
    await output.until('ready');
    const pids = ['bg.pid', 'sid.pid'].map((f) => Number(readFileSync(join(instance.id, f), 'utf8')));
    expect(pids.every(isAlive)).toBe(true);
    stop.abort(new Error('cancelled'));
    const result = await running;
    expect(result.exitCode).toBeNull();
    await vi.waitFor(() => expect(pids.filter(isAlive)).toEqual([]));
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

  it('removes the job directory on destroy, and destroy is idempotent', async () => {
    const instance = await startWith('true');
    expect(existsSync(instance.id)).toBe(true);
    await instance.destroy();
    await instance.destroy();
    expect(existsSync(instance.id)).toBe(false);
  });
});
