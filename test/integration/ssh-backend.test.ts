import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough, Writable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { definition, type SshBackendSettings } from '../../backends/ssh/index.js';
import type { Backend, Instance, RunResult } from '../../src/backend/contract.js';
import { NoCapacityError, SshUnreachableError } from '../../src/errors.js';
import { createLogger, silentLogger, type Logger } from '../../src/logger.js';
import { generateClientKey, startSshd, type SshdTarget } from '../helpers/sshd.js';
import { testAttributes } from '../helpers/attributes.js';
import { testBackendContext } from '../helpers/backend-context.js';

const key = generateClientKey();
const cleanups: (() => Promise<void>)[] = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

const attributes = testAttributes();

async function target(): Promise<SshdTarget> {
  const started = await startSshd({ authorizedKeys: [key.publicKey] });
  cleanups.push(() => started.stop());
  return started;
}

function label(on: SshdTarget): string {
  return `${on.host}:${on.port}`;
}

/** A worker logger whose lines can be awaited by message (`next` resolves at once if one was logged already). */
function watchedLogger(): { logger: Logger; lines: { msg: string; host?: string }[]; next(msg: string): Promise<void> } {
  const lines: { msg: string; host?: string }[] = [];
  let waiters: { msg: string; resolve: () => void }[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      for (const text of chunk.toString('utf8').split('\n').filter(Boolean)) {
        const line = JSON.parse(text) as { msg: string; host?: string };
        lines.push(line);
        waiters = waiters.filter((waiter) => (waiter.msg === line.msg ? (waiter.resolve(), false) : true));
      }
      callback();
    },
  });
  const logger = createLogger({ destination, pretty: false, level: 'debug' });
  const next = (msg: string): Promise<void> =>
    lines.some((line) => line.msg === msg) ? Promise.resolve() : new Promise((resolve) => waiters.push({ msg, resolve }));
  return { logger, lines, next };
}

function backendFor(hosts: SshdTarget[], overrides: Partial<SshBackendSettings> = {}, logger = silentLogger): Backend {
  const backend = definition.create(
    {
      hosts: hosts.map(label),
      user: hosts[0]?.username ?? 'root',
      keyPath: '',
      key: key.privateKey,
      password: '',
      resetCommand: '',
      maxFailures: 3,
      quarantine: 10 * 60_000,
      dialTimeout: 2_000,
      uploadRetries: 1,
      uploadRetrySleep: 10,
      ...overrides,
    },
    testBackendContext({ logger }),
  );
  cleanups.push(() => backend.close());
  return backend;
}

interface Job {
  instance: Instance;
  progress: string[];
  /** Upload and run `script`, then destroy the instance whatever happened. */
  finish(script: string): Promise<RunResult>;
}

async function startJob(backend: Backend, signal = new AbortController().signal): Promise<Job> {
  const progress: string[] = [];
  const instance = await backend.start(attributes, { signal, progress: (line) => progress.push(line), logger: silentLogger, recordPhase: () => {} });
  cleanups.push(() => instance.destroy());
  return {
    instance,
    progress,
    async finish(script) {
      try {
        await instance.upload(Buffer.from(script), { signal });
        return await instance.run({ output: new PassThrough().resume(), signal });
      } finally {
        await instance.destroy();
      }
    },
  };
}

function events(on: SshdTarget): string[] {
  const file = join(on.home, 'events');
  return existsSync(file) ? readFileSync(file, 'utf8').trim().split('\n') : [];
}

describe('ssh backend against real sshd hosts', () => {
  it('runs one job per host at a time, cleaning and resetting the host between jobs', async () => {
    const hosts = [await target(), await target()];
    const backend = backendFor(hosts, { resetCommand: 'echo reset >> ~/events' });
    const script = (n: number): string => `echo begin ${n} >> ~/events\nsleep 0.2\necho end ${n} >> ~/events\n`;

    const first = await startJob(backend);
    const second = await startJob(backend);
    expect(first.instance.id).not.toBe(second.instance.id);
    expect(first.progress).toEqual([`Using host ${first.instance.id}`]);

    // Both hosts are busy: the third job waits for one.
    let thirdStarted = false;
    const third = startJob(backend).then((job) => {
      thirdStarted = true;
      return job;
    });
    const signal = new AbortController().signal;
    await first.instance.upload(Buffer.from(script(1)), { signal });
    expect(await first.instance.run({ output: new PassThrough().resume(), signal })).toEqual({ exitCode: 0 });
    expect(thirdStarted).toBe(false); // a whole job ran meanwhile, with real I/O: a free host would have been handed out
    await first.instance.destroy();
    const [secondResult, thirdJob] = await Promise.all([second.finish(script(2)), third]);
    expect(secondResult).toEqual({ exitCode: 0 });
    // The host the first job freed; the script it left was removed, or this would be a stale VM.
    expect(thirdJob.instance.id).toBe(first.instance.id);
    expect(await thirdJob.finish(script(3))).toEqual({ exitCode: 0 });

    const firstHost = hosts.find((host) => label(host) === first.instance.id) as SshdTarget;
    const secondHost = hosts.find((host) => label(host) === second.instance.id) as SshdTarget;
    expect(events(firstHost)).toEqual(['begin 1', 'end 1', 'reset', 'begin 3', 'end 3', 'reset']);
    expect(events(secondHost)).toEqual(['begin 2', 'end 2', 'reset']);
    for (const host of hosts) expect(existsSync(join(host.home, 'build.sh'))).toBe(false);
  });

  it('takes a host that keeps failing out of rotation and sends jobs to the other', async () => {
    const dead = await target();
    const alive = await target();
    await dead.stop();
    const watched = watchedLogger();
    const backend = backendFor([dead, alive], { maxFailures: 2 }, watched.logger);
    const used: string[] = [];
    for (let n = 0; n < 5; n += 1) {
      const job = await startJob(backend);
      used.push(job.instance.id);
      if (job.instance.id === label(dead)) {
        await expect(job.finish('true\n')).rejects.toBeInstanceOf(SshUnreachableError);
      } else {
        expect(await job.finish('true\n')).toEqual({ exitCode: 0 });
      }
    }
    // Least recently used first: dead, alive, dead (second failure: out), then only alive.
    expect(used).toEqual([label(dead), label(alive), label(dead), label(alive), label(alive)]);
    expect(watched.lines.filter((line) => line.msg === 'ssh host taken out of rotation after repeated failures')).toEqual([
      expect.objectContaining({ host: label(dead) }),
    ]);
  });

  it('counts a failing reset command as a host failure', async () => {
    const host = await target();
    const watched = watchedLogger();
    const backend = backendFor([host], { maxFailures: 1, resetCommand: 'exit 7' }, watched.logger);
    const job = await startJob(backend);
    expect(await job.finish('echo ok\n')).toEqual({ exitCode: 0 });
    expect(watched.lines.map((line) => line.msg)).toContain('ssh host taken out of rotation after repeated failures');
    await expect(startJob(backend)).rejects.toBeInstanceOf(NoCapacityError);
  });

  it('has no capacity when every host is out of rotation, and takes a host back after its quarantine', async () => {
    const dead = await target();
    await dead.stop();
    const watched = watchedLogger();
    const backend = backendFor([dead], { maxFailures: 1, quarantine: 200 }, watched.logger);
    const job = await startJob(backend);
    await expect(job.finish('true\n')).rejects.toBeInstanceOf(SshUnreachableError);
    await expect(startJob(backend)).rejects.toBeInstanceOf(NoCapacityError);
    await watched.next('ssh host rejoins rotation');
    const again = await startJob(backend);
    expect(again.instance.id).toBe(label(dead));
    await again.instance.destroy();
  });

  it('stops waiting for a free host when the start signal aborts', async () => {
    const host = await target();
    const backend = backendFor([host]);
    const holder = await startJob(backend);
    const controller = new AbortController();
    const waiting = startJob(backend, controller.signal);
    const reason = new Error('startup timeout');
    controller.abort(reason);
    await expect(waiting).rejects.toBe(reason);
    await holder.instance.destroy();
    const next = await startJob(backend);
    expect(next.instance.id).toBe(label(host));
    await next.instance.destroy();
  });
});
