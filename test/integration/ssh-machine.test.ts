import { existsSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { setTimeout as delay } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { ConnectionLostError, SshUnreachableError, StaleVmError } from '../../src/errors.js';
import { generateJobKeyPair } from '../../src/ssh/keys.js';
import { SshMachine, type SshMachineOptions } from '../../src/ssh/machine.js';
import { generateClientKey, startSshd, type SshdTarget } from '../helpers/sshd.js';

const key = generateClientKey();
const cleanups: (() => Promise<void>)[] = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function target(): Promise<SshdTarget> {
  const started = await startSshd({ authorizedKeys: [key.publicKey] });
  cleanups.push(() => started.stop());
  return started;
}

function instance(on: SshdTarget, overrides: Partial<SshMachineOptions> = {}): SshMachine {
  const made = new SshMachine({
    id: `test-${on.host}`,
    imageName: 'test',
    startupMs: 0,
    target: { host: on.host, port: on.port, username: on.username, privateKey: key.privateKey },
    retrySleepMs: 50,
    maxAttempts: 5,
    ...overrides,
  });
  cleanups.push(() => made.destroy());
  return made;
}

function signal(): AbortSignal {
  return new AbortController().signal;
}

/** Collects output as text; `waitFor` resolves once the text contains a string. */
class Collector extends Writable {
  text = '';
  #waiters: { needle: string; resolve: () => void }[] = [];
  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: () => void): void {
    this.text += chunk.toString('utf8');
    this.#waiters = this.#waiters.filter((waiter) => {
      if (!this.text.includes(waiter.needle)) return true;
      waiter.resolve();
      return false;
    });
    callback();
  }
  waitFor(needle: string): Promise<void> {
    if (this.text.includes(needle)) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push({ needle, resolve }));
  }
}

/** True while `pid` is a live (not zombie) process. */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/**
 * Wait until `pid` is gone. Another process's death sends us no event, so
 * this polls /proc; the bound only keeps a failing test from hanging.
 */
async function waitUntilGone(pid: number): Promise<boolean> {
  for (let i = 0; i < 250; i += 1) {
    if (!alive(pid)) return true;
    await delay(20);
  }
  return false;
}

describe('SshMachine against a real sshd', () => {
  it('uploads the script into the home directory and returns its exit code and output', async () => {
    const vm = await target();
    for (const code of [0, 1, 3]) {
      rmSync(join(vm.home, 'build.sh'), { force: true });
      const machine = instance(vm);
      await machine.upload(Buffer.from(`echo "hello $HOME"\nstty size\nexit ${code}\n`), { signal: signal() });
      const uploaded = join(vm.home, 'build.sh');
      expect(existsSync(uploaded)).toBe(true);
      expect(statSync(uploaded).mode & 0o777).toBe(0o755);
      const output = new Collector();
      const result = await machine.run({ output, signal: signal() });
      expect(result).toEqual({ exitCode: code });
      expect(output.text).toContain(`hello ${vm.home}`);
      expect(output.text).toContain('40 80'); // the terminal travis gives builds
      expect(output.writableEnded).toBe(false); // the caller owns the stream
      await machine.destroy();
    }
  });

  it('refuses a machine that already has a build script (stale VM)', async () => {
    const vm = await target();
    const first = instance(vm);
    await first.upload(Buffer.from('true\n'), { signal: signal() });
    await first.destroy();
    const second = instance(vm);
    await expect(second.upload(Buffer.from('true\n'), { signal: signal() })).rejects.toBeInstanceOf(StaleVmError);
  });

  it('gives up with SshUnreachableError when nothing answers', async () => {
    const vm = await target();
    await vm.stop();
    const machine = instance(vm, { maxAttempts: 3, retrySleepMs: 10, dialTimeoutMs: 1000 });
    await expect(machine.upload(Buffer.from('true\n'), { signal: signal() })).rejects.toBeInstanceOf(
      SshUnreachableError,
    );
  });

  it('rethrows the signal reason when the upload is aborted while dialling', async () => {
    const vm = await target();
    await vm.stop();
    const controller = new AbortController();
    const reason = new Error('upload timeout');
    const machine = instance(vm, { maxAttempts: 1000, retrySleepMs: 10 });
    const upload = machine.upload(Buffer.from('true\n'), { signal: controller.signal });
    controller.abort(reason);
    await expect(upload).rejects.toBe(reason);
  });

  it('kills the script and its children when the run is aborted', async () => {
    const vm = await target();
    const machine = instance(vm);
    const script = 'echo $$ > ~/script.pid\nsleep 600 &\necho $! > ~/child.pid\necho started\nwait\necho finished\n';
    await machine.upload(Buffer.from(script), { signal: signal() });
    const output = new Collector();
    const controller = new AbortController();
    const run = machine.run({ output, signal: controller.signal });
    await output.waitFor('started');
    const scriptPid = Number(readFileSync(join(vm.home, 'script.pid'), 'utf8'));
    const childPid = Number(readFileSync(join(vm.home, 'child.pid'), 'utf8'));
    expect(alive(scriptPid)).toBe(true);
    const reason = new Error('cancelled');
    controller.abort(reason);
    await expect(run).rejects.toBe(reason);
    expect(await waitUntilGone(scriptPid)).toBe(true);
    expect(await waitUntilGone(childPid)).toBe(true);
    expect(output.text).not.toContain('finished');
  });

  it('throws ConnectionLostError when the connection drops mid-script', async () => {
    const vm = await target();
    const machine = instance(vm);
    await machine.upload(Buffer.from('echo started\nsleep 600\n'), { signal: signal() });
    const output = new Collector();
    const run = machine.run({ output, signal: signal() });
    await output.waitFor('started');
    await vm.dropConnections();
    await expect(run).rejects.toBeInstanceOf(ConnectionLostError);
  });

  it('honours backpressure: a slow, small output stream gets every byte in order', async () => {
    const vm = await target();
    const machine = instance(vm);
    const lines = 300_000; // about 2 MB, with the terminal's \r\n
    await machine.upload(Buffer.from(`seq 1 ${lines}\n`), { signal: signal() });
    const highWaterMark = 1024;
    const chunks: Buffer[] = [];
    let maxBuffered = 0;
    const output = new Writable({
      highWaterMark,
      write(chunk: Buffer, _encoding, callback) {
        chunks.push(chunk);
        setImmediate(callback); // slower than loopback SSH
      },
    });
    const write = output.write.bind(output);
    output.write = ((...args: Parameters<typeof output.write>) => {
      const ok = write(...args);
      maxBuffered = Math.max(maxBuffered, output.writableLength);
      return ok;
    }) as typeof output.write;
    const result = await machine.run({ output, signal: signal() });
    expect(result.exitCode).toBe(0);
    await new Promise<void>((resolve) => (output.writableLength === 0 ? resolve() : output.once('drain', resolve)));
    const received = Buffer.concat(chunks).toString('utf8').split('\r\n');
    expect(received.pop()).toBe('');
    expect(received.length).toBe(lines);
    received.forEach((line, index) => {
      if (line !== String(index + 1)) expect.fail(`line ${index + 1} is ${JSON.stringify(line)}`);
    });
    // Without backpressure the slow stream would buffer most of the 2 MB;
    // with it, at most one SSH packet (32 KiB) arrives after write() says stop.
    expect(maxBuffered).toBeLessThanOrEqual(highWaterMark + 64 * 1024);
  });

  it('generates ed25519 job keys that sshd accepts', async () => {
    const pair = generateJobKeyPair();
    expect(pair.publicKey).toMatch(/^ssh-ed25519 \S+ mayfly$/);
    const vm = await startSshd({ authorizedKeys: [pair.publicKey] });
    cleanups.push(() => vm.stop());
    const machine = new SshMachine({
      id: 'keys',
      imageName: 'test',
      startupMs: 0,
      target: { host: vm.host, port: vm.port, username: vm.username, privateKey: pair.privateKey },
      maxAttempts: 1,
    });
    cleanups.push(() => machine.destroy());
    const result = await machine.exec('echo ok', { signal: signal() });
    expect(result).toEqual({ exitCode: 0, output: 'ok\n' });
  });
});
