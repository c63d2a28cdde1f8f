/**
 * The raw-SSH baselines: OpenSSH's own client against the same sshd
 * targets the worker uses, timed by bash's `time` keyword (wall clock and
 * the client's CPU, millisecond resolution).
 */
import { spawn } from 'node:child_process';
import type { SshdTarget } from '../test/helpers/sshd.js';
import { wallUs } from './stats.js';

export interface OpenSshRun {
  /** Wall clock from fork to exit, in ms. */
  elapsedMs: number;
  /** CPU time of the `ssh` process (user + system), in ms. */
  cpuMs: number;
}

function shellQuote(text: string): string {
  return `'${text.replaceAll("'", `'\\''`)}'`;
}

/**
 * The key exchange and cipher the worker's ssh2 client negotiates with
 * OpenSSH's sshd (on a CPU with AES instructions). OpenSSH's own default
 * key exchange, sntrup761x25519, costs the client about 150 ms more per
 * connection on a small machine: not a limit the worker is subject to.
 */
export const SAME_ALGORITHMS_AS_SSH2 = ['-o', 'KexAlgorithms=curve25519-sha256@libssh.org,curve25519-sha256', '-o', 'Ciphers=aes128-gcm@openssh.com'];

/** `ssh` arguments for `target`: key auth, no host key checks, no user config, no multiplexing. */
export function sshArgs(target: SshdTarget, keyPath: string, remoteCommand: string, options: { tty?: boolean } = {}): string[] {
  return [
    ...(options.tty ? ['-tt'] : []),
    '-F', '/dev/null',
    '-i', keyPath,
    '-o', 'StrictHostKeyChecking=no',
    '-o', 'UserKnownHostsFile=/dev/null',
    '-o', 'BatchMode=yes',
    '-o', 'LogLevel=ERROR',
    '-o', 'ControlMaster=no',
    ...SAME_ALGORITHMS_AS_SSH2,
    '-p', String(target.port),
    `${target.username}@${target.host}`,
    remoteCommand,
  ];
}

/** The same as a shell command line. */
export function sshCommand(target: SshdTarget, keyPath: string, remoteCommand: string, options: { tty?: boolean } = {}): string {
  return ['ssh', ...sshArgs(target, keyPath, remoteCommand, options).map(shellQuote)].join(' ');
}

/**
 * Run `remoteCommand` with OpenSSH, keeping its (small) output; resolves
 * with the output and the wall clock, in µs, at which the client exited.
 */
export function captureOpenSsh(
  target: SshdTarget,
  keyPath: string,
  remoteCommand: string,
  options: { tty?: boolean; signal: AbortSignal },
): Promise<{ stdout: string; exitUs: number }> {
  return new Promise((resolve, reject) => {
    const child = spawn('ssh', sshArgs(target, keyPath, remoteCommand, options), {
      stdio: ['ignore', 'pipe', 'pipe'],
      signal: options.signal,
      killSignal: 'SIGKILL',
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.once('error', reject);
    child.once('exit', (code) => {
      const exitUs = wallUs();
      child.once('close', () => {
        if (code === 0) resolve({ stdout, exitUs });
        else reject(new Error(`ssh ${remoteCommand} failed (exit ${code}): ${stderr.trim().slice(0, 300)}`));
      });
    });
  });
}

/**
 * Run `remoteCommand` on `target` with OpenSSH, output to /dev/null.
 * Rejects if ssh fails or the signal aborts (the client is killed).
 */
export function runOpenSsh(
  target: SshdTarget,
  keyPath: string,
  remoteCommand: string,
  options: { tty?: boolean; signal: AbortSignal },
): Promise<OpenSshRun> {
  const script = `TIMEFORMAT='@time %3R %3U %3S'; time ${sshCommand(target, keyPath, remoteCommand, options)} > /dev/null < /dev/null`;
  return new Promise((resolve, reject) => {
    const child = spawn('bash', ['-c', script], { stdio: ['ignore', 'ignore', 'pipe'], signal: options.signal, killSignal: 'SIGKILL' });
    let stderr = '';
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => (stderr += chunk));
    child.once('error', reject);
    child.once('close', (code) => {
      const match = /^@time ([\d.]+) ([\d.]+) ([\d.]+)$/m.exec(stderr);
      if (code !== 0 || match === null) {
        reject(new Error(`ssh ${remoteCommand} failed (exit ${code}): ${stderr.trim().slice(0, 300)}`));
        return;
      }
      resolve({ elapsedMs: Number(match[1]) * 1000, cpuMs: (Number(match[2]) + Number(match[3])) * 1000 });
    });
  });
}
