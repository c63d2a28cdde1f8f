/**
 * Real OpenSSH servers standing in for VMs in integration tests. Each target
 * listens on its own loopback address with its own home directory, so tests
 * running in parallel (and the jobs inside one test) never see each other's
 * files. Everything a target starts or writes is gone after `stop()`.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { threadId } from 'node:worker_threads';
import { generateJobKeyPair } from '../../src/ssh/keys.js';
import { killDescendants, signalQuietly } from '../../src/util/process-tree.js';
import { freePort } from './ports.js';

const SSHD = '/usr/sbin/sshd';
const SSH_KEYGEN = '/usr/bin/ssh-keygen';
/** sshd's privilege-separation directory; Debian's package creates it only at boot. */
const PRIVSEP_DIR = '/run/sshd';
/** How long a fresh sshd may take to listen; it takes about 20 ms when the machine is idle. */
const LISTEN_TIMEOUT_MS = 10_000;

export interface SshdTarget {
  /** The loopback address sshd listens on (127.x.y.z, never 127.0.0.1). */
  host: string;
  port: number;
  /** The user to log in as (the test process's user: root here). */
  username: string;
  /** This target's home directory: `$HOME` of its sessions and the SFTP start directory. */
  home: string;
  /** The listener's pid. */
  pid: number;
  /** Kill sshd and everything it started, and remove the target's files. Idempotent. */
  stop(): Promise<void>;
  /** Kill every process serving a connection (not the listener): clients see their connection drop. */
  dropConnections(): Promise<void>;
}

export interface StartSshdOptions {
  /** Public keys (OpenSSH `authorized_keys` lines) allowed to log in. */
  authorizedKeys: string[];
  /** Address to listen on; a fresh loopback address by default (see `nextLoopbackAddress`). */
  host?: string;
  /** Port to listen on (e.g. 22, as a cloud VM would); a free port the kernel picks by default. */
  port?: number;
}

/** A client key pair: ed25519, private key in OpenSSH format, public key as an authorized_keys line. */
export function generateClientKey(): { privateKey: string; publicKey: string } {
  // The job key generator also checks the pair (ssh2 makes a malformed one about once in 200).
  return generateJobKeyPair();
}

let hostKeyText: string | undefined;

/**
 * One ed25519 host key per test process, made by ssh-keygen (as a real host
 * would have) and kept in memory: the file ssh-keygen wrote is removed at once.
 */
function hostKey(): string {
  if (hostKeyText === undefined) {
    const dir = mkdtempSync(join(tmpdir(), 'mayfly-hostkey-'));
    try {
      execFileSync(SSH_KEYGEN, ['-q', '-t', 'ed25519', '-N', '', '-C', 'mayfly-test-host', '-f', join(dir, 'key')]);
      hostKeyText = readFileSync(join(dir, 'key'), 'utf8');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
  return hostKeyText;
}

let addressCounter = 0;

/** Targets not stopped yet: killed at process exit should a test forget one, so no sshd outlives its tests. */
const running = new Set<() => void>();
process.once('exit', () => {
  for (const kill of running) kill();
});

/**
 * A loopback address unique to this process (and worker thread) and call:
 * 127.<pid bits>.<n>. The whole 127/8 is routed to `lo` on Linux, so no
 * setup is needed. Should two test processes still collide, the ports differ.
 */
export function nextLoopbackAddress(): string {
  addressCounter += 1;
  const second = (process.pid >> 8) & 0xff || 0xff; // never 127.0.x.x: keeps clear of 127.0.0.1
  const third = (process.pid + threadId * 97) & 0xff;
  const fourth = ((addressCounter - 1) % 254) + 1;
  return `127.${second}.${third}.${fourth}`;
}


function writeConfig(dir: string, host: string, port: number, home: string): string {
  const config = join(dir, 'sshd_config');
  writeFileSync(
    config,
    [
      `ListenAddress ${host}`,
      `Port ${port}`,
      `HostKey ${join(dir, 'host_key')}`,
      `PidFile ${join(dir, 'sshd.pid')}`,
      `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
      'UsePAM no',
      'StrictModes no',
      'PermitRootLogin prohibit-password',
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      // Each target has its own home: sshd sets HOME from the passwd entry,
      // and SetEnv (applied after it) overrides it, so `bash ~/build.sh` and
      // `rm -f ~/build.sh` resolve here. SFTP starts here too (-d).
      `Subsystem sftp internal-sftp -d ${home}`,
      `SetEnv HOME=${home}`,
      'LogLevel INFO',
      '',
    ].join('\n'),
  );
  return config;
}

/** Resolves when sshd says it listens; rejects with its stderr if it exits or stays silent. */
function waitForListening(child: ChildProcess, stderrLines: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    let buffered = '';
    const timer = setTimeout(() => {
      finish(new Error(`sshd did not listen within ${LISTEN_TIMEOUT_MS} ms:\n${stderrLines.join('\n')}`));
    }, LISTEN_TIMEOUT_MS);
    const onData = (chunk: Buffer): void => {
      buffered += chunk.toString('utf8');
      const lines = buffered.split('\n');
      buffered = lines.pop() ?? '';
      for (const line of lines) {
        stderrLines.push(line);
        if (line.startsWith('Server listening on')) finish();
      }
    };
    const onExit = (code: number | null, sig: string | null): void => {
      finish(new Error(`sshd exited (${code ?? sig}) before listening:\n${[...stderrLines, buffered].join('\n')}`));
    };
    const finish = (err?: Error): void => {
      clearTimeout(timer);
      child.stderr?.off('data', onData);
      child.off('exit', onExit);
      // Keep draining stderr so sshd never blocks on a full pipe; keep the last lines for diagnostics.
      child.stderr?.on('data', (more: Buffer) => {
        stderrLines.push(more.toString('utf8'));
        if (stderrLines.length > 200) stderrLines.splice(0, stderrLines.length - 200);
      });
      if (err) reject(err);
      else resolve();
    };
    child.stderr?.on('data', onData);
    child.once('exit', onExit);
  });
}

/** Start a real sshd on loopback that accepts `authorizedKeys` for the current user. */
export async function startSshd(options: StartSshdOptions): Promise<SshdTarget> {
  if (!existsSync(SSHD)) {
    throw new Error(`${SSHD} not found: install OpenSSH server (apt-get install openssh-server)`);
  }
  mkdirSync(PRIVSEP_DIR, { recursive: true, mode: 0o755 });
  const host = options.host ?? nextLoopbackAddress();
  const port = options.port ?? (await freePort(host));
  const dir = mkdtempSync(join(tmpdir(), 'mayfly-sshd-'));
  const home = join(dir, 'home');
  mkdirSync(home);
  writeFileSync(join(dir, 'host_key'), hostKey(), { mode: 0o600 });
  writeFileSync(join(dir, 'authorized_keys'), options.authorizedKeys.map((key) => `${key.trim()}\n`).join(''));
  const config = writeConfig(dir, host, port, home);

  const child = spawn(SSHD, ['-D', '-e', '-f', config], { stdio: ['ignore', 'ignore', 'pipe'] });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stderrLines: string[] = [];
  const pid = child.pid;
  const removeFiles = (): void => rmSync(dir, { recursive: true, force: true });
  if (pid === undefined) {
    removeFiles();
    throw new Error(`could not spawn ${SSHD}`);
  }
  try {
    await waitForListening(child, stderrLines);
  } catch (err) {
    child.kill('SIGKILL');
    await exited;
    removeFiles();
    throw err;
  }

  let stopped = false;
  const killNow = (): void => {
    signalQuietly(pid, 'SIGSTOP'); // no new connections while the tree is collected
    killDescendants(pid);
    signalQuietly(pid, 'SIGKILL');
    removeFiles();
  };
  running.add(killNow);
  return {
    host,
    port,
    username: userInfo().username,
    home,
    pid,
    async dropConnections() {
      if (!stopped) killDescendants(pid);
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      running.delete(killNow);
      killNow();
      await exited;
      child.stderr?.destroy();
    },
  };
}
