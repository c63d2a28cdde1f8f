/**
 * The one suite every backend that runs real scripts passes (local, ssh,
 * docker, gce, ec2): the contract of src/backend/contract.ts, checked
 * through its behaviour. Each backend's test file calls
 * `describeBackendConformance` with a setup that gives it a backend and a
 * way to count what the backend's world still holds (VMs in a fake cloud,
 * containers, directories, busy hosts), which must be nothing after each test.
 */
import { Writable } from 'node:stream';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Backend, Instance, StartOptions } from '../../src/backend/contract.js';
import { StaleVmError } from '../../src/errors.js';
import { silentLogger } from '../../src/logger.js';
import { CollectingWritable } from '../helpers/collect.js';
import { testAttributes } from '../helpers/attributes.js';

export interface ConformanceTarget {
  backend: Backend;
  /** How many instances the backend's world still holds; 0 once every instance is destroyed. */
  liveInstances(): Promise<number>;
  /** Stop whatever the setup started. */
  close(): Promise<void>;
}

export const conformanceAttributes = testAttributes();

const never = new AbortController().signal;

function startOptions(signal: AbortSignal = never): StartOptions {
  return { signal, progress: () => {}, logger: silentLogger, recordPhase: () => {} };
}

/** Terminals end lines with \r\n, pipes with \n; the contract is about the text. */
const lines = (text: string): string => text.replace(/\r\n/g, '\n');

export interface ConformanceOptions {
  /** The backend serves the warm pool (docs/warm-pool.md): it tells machine shapes, and its instances answer a probe. */
  warmPool?: boolean;
}

export function describeBackendConformance(name: string, setup: () => Promise<ConformanceTarget>, options: ConformanceOptions = {}): void {
  describe(`backend conformance: ${name}`, () => {
    let target: ConformanceTarget;
    const instances: Instance[] = [];

    beforeAll(async () => {
      target = await setup();
    });
    afterEach(async () => {
      await Promise.all(instances.splice(0).map((instance) => instance.destroy()));
      expect(await target.liveInstances()).toBe(0);
    });
    afterAll(async () => {
      await target?.backend.close();
      await target?.close();
    });

    async function started(signal?: AbortSignal): Promise<Instance> {
      const instance = await target.backend.start(conformanceAttributes, startOptions(signal));
      instances.push(instance);
      return instance;
    }

    async function uploaded(script: string): Promise<Instance> {
      const instance = await started();
      await instance.upload(Buffer.from(script), { signal: never });
      return instance;
    }

    it('starts an instance with an id, uploads a script and runs it to exit 0, streaming its output', async () => {
      const instance = await uploaded('echo "hello from $0"; echo second line');
      expect(instance.id).not.toBe('');
      expect(instance.startupMs).toBeGreaterThanOrEqual(0);
      const output = new CollectingWritable();
      expect(await instance.run({ output, signal: never })).toEqual({ exitCode: 0 });
      expect(lines(output.text)).toMatch(/hello from .*\nsecond line\n$/);
      expect(output.writableEnded).toBe(false);
    });

    it.each([1, 3])('returns exit status %i as it is', async (code) => {
      const instance = await uploaded(`exit ${code}`);
      expect(await instance.run({ output: new CollectingWritable(), signal: never })).toEqual({ exitCode: code });
    });

    if (options.warmPool) {
      it('tells the shape start boots (image included, job and repository aside), and answers a probe before taking its script', async () => {
        const { shape } = target.backend;
        if (shape === undefined) throw new Error(`${name} tells no machine shapes`);
        const first = await shape.call(target.backend, conformanceAttributes, never);
        const other = await shape.call(target.backend, { ...conformanceAttributes, jobId: 9_999, repository: 'another/repository' }, never);
        expect(other).toEqual(first);
        const instance = await started();
        expect(instance.imageName).toBe(first.image);
        if (instance.probe === undefined) throw new Error(`${name} instances have no probe`);
        await instance.probe(never);
        await instance.upload(Buffer.from('echo probed'), { signal: never });
        const output = new CollectingWritable();
        expect(await instance.run({ output, signal: never })).toEqual({ exitCode: 0 });
        expect(lines(output.text)).toContain('probed\n');
      });
    }

    it('refuses a second script: the instance is stale', async () => {
      const instance = await uploaded('true');
      await expect(instance.upload(Buffer.from('true'), { signal: never })).rejects.toBeInstanceOf(StaleVmError);
    });

    it('stops a running script promptly when the run is aborted', async () => {
      const instance = await uploaded('echo ready; sleep 600; echo not reached');
      const output = new CollectingWritable();
      const stop = new AbortController();
      const running = instance.run({ output, signal: stop.signal });
      await output.until('ready');
      stop.abort(new Error('stopped by the conformance suite'));
      const settled = await running.then(
        (result) => ({ result }),
        (error: unknown) => ({ error }),
      );
      if ('result' in settled) expect(settled.result.exitCode).not.toBe(0);
      expect(lines(output.text)).not.toContain('not reached');
    });

    it('honours backpressure: a slow output stream gets every byte, in order', async () => {
      const instance = await uploaded('for i in $(seq 1 20000); do echo "line $i"; done');
      let received = '';
      const output = new Writable({
        highWaterMark: 1024,
        write(chunk: Buffer, _encoding, callback) {
          received += chunk.toString('utf8');
          setImmediate(callback);
        },
      });
      expect(await instance.run({ output, signal: never })).toEqual({ exitCode: 0 });
      const got = lines(received).trimEnd().split('\n');
      expect(got.length).toBe(20000);
      expect(got.every((line, i) => line === `line ${i + 1}`)).toBe(true);
    });

    it('rejects a start whose signal is already aborted, leaving nothing behind', async () => {
      const aborted = new AbortController();
      aborted.abort(new Error('cancelled before boot'));
      await expect(started(aborted.signal)).rejects.toThrow();
    });

    it('destroys an instance that never got a script, and destroy is idempotent', async () => {
      const instance = await started();
      await instance.destroy();
      await instance.destroy();
      expect(await target.liveInstances()).toBe(0);
    });
  });
}
