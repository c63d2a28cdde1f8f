/**
 * Everything a bench run starts, released last-in first-out whatever
 * happens: sshd targets, worker processes, the vhost, temp files. The run
 * releases on its way out, on an error and on SIGTERM (the launcher turns
 * Ctrl-C into one); targets forgotten anyway are killed by the sshd
 * harness at process exit.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { errorMessage } from '../src/errors.js';
import { rabbitmqctl, BROKER } from '../test/helpers/rabbitmq.js';
import { generateClientKey, startSshd, type SshdTarget } from '../test/helpers/sshd.js';

/** A release that takes longer is abandoned so that the rest still runs. */
const RELEASE_TIMEOUT_MS = 60_000;
/** sshd targets started at once: each takes ~20 ms idle, and the machine has two cores. */
const SSHD_START_CONCURRENCY = 16;

interface Releaser {
  name: string;
  release: () => Promise<void> | void;
}

export class Resources {
  readonly #releasers: Releaser[] = [];
  #releasing: Promise<void> | undefined;

  /** Register `release` (run once, last-in first-out); returns a function that runs it now instead. */
  add(name: string, release: () => Promise<void> | void): () => Promise<void> {
    const releaser: Releaser = { name, release };
    this.#releasers.push(releaser);
    return async () => {
      const index = this.#releasers.indexOf(releaser);
      if (index === -1) return;
      this.#releasers.splice(index, 1);
      await runReleaser(releaser);
    };
  }

  /** Release everything still registered. Never throws; idempotent. */
  releaseAll(): Promise<void> {
    this.#releasing ??= (async () => {
      for (let releaser = this.#releasers.pop(); releaser; releaser = this.#releasers.pop()) await runReleaser(releaser);
    })();
    return this.#releasing;
  }
}

async function runReleaser(releaser: Releaser): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      Promise.resolve().then(releaser.release),
      new Promise<void>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`gave up after ${RELEASE_TIMEOUT_MS / 1000} s`)), RELEASE_TIMEOUT_MS);
      }),
    ]);
  } catch (err) {
    console.error(`bench: could not release ${releaser.name}: ${errorMessage(err)}`);
  } finally {
    clearTimeout(timer);
  }
}

/** A temp directory removed at release. */
export function tempDir(resources: Resources): string {
  const dir = mkdtempSync(join(tmpdir(), 'mayfly-bench-'));
  resources.add(`temp dir ${dir}`, () => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A vhost of its own (the protocol's queue names are fixed), deleted at release. Takes a few seconds (rabbitmqctl). */
export async function createVhost(resources: Resources): Promise<{ name: string; uri: string }> {
  const name = `mayfly-bench-${randomBytes(4).toString('hex')}`;
  await rabbitmqctl('add_vhost', name);
  resources.add(`vhost ${name}`, async () => {
    await rabbitmqctl('delete_vhost', name);
  });
  await rabbitmqctl('set_permissions', '-p', name, 'guest', '.*', '.*', '.*');
  return { name, uri: `${BROKER}/${encodeURIComponent(name)}` };
}

/** The client key every target accepts, with its private half also in a file for OpenSSH's `ssh -i`. */
export interface ClientKey {
  privateKey: string;
  publicKey: string;
  path: string;
}

export function clientKey(dir: string): ClientKey {
  const key = generateClientKey();
  const path = join(dir, 'id_ed25519');
  writeFileSync(path, key.privateKey, { mode: 0o600 });
  return { ...key, path };
}

/**
 * Loopback addresses of this run's targets: 127.251.x.y, away from the test
 * harness's 127.<pid bits>.x.y and from 127.0.0.1. Two bench runs at once
 * would share addresses, which is harmless: each sshd gets a free port.
 */
function targetAddress(index: number): string {
  return `127.251.${Math.floor(index / 250)}.${(index % 250) + 1}`;
}

/** Targets started together, and how to stop them all before the run ends. */
export interface Targets {
  list: SshdTarget[];
  release: () => Promise<void>;
}

/** Start `count` sshd targets (each on its own loopback address), stopped at release. */
export async function startTargets(resources: Resources, key: ClientKey, count: number, signal: AbortSignal): Promise<Targets> {
  const targets: SshdTarget[] = [];
  const release = resources.add(`${count} sshd targets`, async () => {
    // stop() is synchronous work (freeze, kill, remove files) plus waiting for the exit: one by one is fine.
    for (const target of targets) await target.stop();
  });
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < count) {
      signal.throwIfAborted();
      const index = next++;
      targets.push(await startSshd({ authorizedKeys: [key.publicKey], host: targetAddress(index) }));
    }
  };
  await Promise.all(Array.from({ length: Math.min(SSHD_START_CONCURRENCY, count) }, worker));
  return { list: targets, release };
}
