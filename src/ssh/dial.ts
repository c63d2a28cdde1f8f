/**
 * Connecting to a machine that may still be booting: one attempt is bounded
 * by a dial timeout, attempts are repeated after a pause until one succeeds,
 * the attempts run out, or the caller's signal aborts.
 */
import { Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import ssh2 from 'ssh2';
import type { ConnectConfig } from 'ssh2';
import { SshUnreachableError, errorMessage } from '../errors.js';
import type { Logger } from '../logger.js';
import { growingDelays } from '../util/backoff.js';
import { SshConnection } from './connection.js';
import { Semaphore } from './semaphore.js';
import { describeTarget, type SshTarget } from './target.js';

/** Per connection attempt, in ms (travis-ci/worker `SSH_DIAL_TIMEOUT`, 5s). */
export const DEFAULT_DIAL_TIMEOUT_MS = 5_000;
/** Pause between attempts, in ms (travis-ci/worker `UPLOAD_RETRY_SLEEP`, 1s). */
export const DEFAULT_RETRY_SLEEP_MS = 1_000;
/** Attempts before giving up (travis-ci/worker `UPLOAD_RETRIES`, 120). */
export const DEFAULT_MAX_ATTEMPTS = 120;
/**
 * First pause after a refused connection, in ms; the pauses double up to
 * the retry sleep. A booting VM refuses until sshd listens, which it then
 * does within milliseconds (about 20 ms for OpenSSH on an idle machine):
 * a short pause notices it about as soon as it happens, where a fixed
 * sleep would add up to its whole length to every start.
 */
export const REFUSED_FIRST_PAUSE_MS = 50;
/**
 * Longest pause after a refused connection, in ms (or the retry sleep, if
 * shorter). A refusal costs a SYN and a RST, nothing a machine notices, so
 * sshd is found within a quarter of a second of listening.
 */
export const REFUSED_MAX_PAUSE_MS = 250;
/**
 * Keepalives on an established connection: a machine that vanishes without
 * closing TCP (host crash, network partition) is noticed after about
 * 30 s instead of when the job's log-silence timeout fires.
 */
const KEEPALIVE_INTERVAL_MS = 10_000;
const KEEPALIVE_COUNT_MAX = 3;

/**
 * SSH handshakes (key exchange plus authentication) in progress at once in
 * this process; more wait their turn with their TCP connection open. A
 * handshake costs the target far more CPU than the client (sshd re-executes
 * itself), and without a cap a pool starting hundreds of jobs at once
 * shares the CPU among all of them until every one outlives the dial
 * timeout, again on every retry: 500 jobs on 500 loopback sshd on 2 cores
 * lost 190 to "Timed out while waiting for handshake" (`npm run bench`,
 * scale). Measured there: 64 sshd on 2 cores complete about 64 handshakes/s
 * whatever the concurrency; 16 at once reach 57/s at 0.26 s each, 64 at once
 * 0.86 s each, so 500 at once would take about 8 s each. 16 keeps nearly the
 * full rate with each handshake far inside the 5 s dial timeout; against
 * remote VMs (about 0.4 s per handshake at 100 ms RTT) it still allows
 * about 40 handshakes/s, faster than clouds boot VMs.
 */
export const MAX_CONCURRENT_HANDSHAKES = 16;
const handshakes = new Semaphore(MAX_CONCURRENT_HANDSHAKES);

export interface ConnectOptions {
  signal: AbortSignal;
  /**
   * Bound on the TCP connect, in ms, and again on the SSH handshake plus
   * authentication once its turn comes (MAX_CONCURRENT_HANDSHAKES); the
   * wait for a turn is bounded by `signal` only.
   */
  timeoutMs: number;
}

export interface DialOptions {
  signal: AbortSignal;
  /** Per attempt, in ms; default 5000. */
  dialTimeoutMs?: number;
  /** Between attempts, in ms; default 1000. After a refused connection the pauses start at REFUSED_FIRST_PAUSE_MS and double up to REFUSED_MAX_PAUSE_MS (or this, if shorter). */
  retrySleepMs?: number;
  /** Attempts in all, as long as `maxAttempts - 1` retry sleeps last (refused attempts come faster); default 120. The signal bounds the total time too. */
  maxAttempts?: number;
  logger: Logger;
}

function connectConfig(target: SshTarget, timeoutMs: number): ConnectConfig {
  const config: ConnectConfig = {
    host: target.host,
    port: target.port,
    username: target.username,
    readyTimeout: timeoutMs,
    keepaliveInterval: KEEPALIVE_INTERVAL_MS,
    keepaliveCountMax: KEEPALIVE_COUNT_MAX,
    // Job VMs are fresh with host keys nobody could know in advance, and the
    // persistent hosts are reached on the operator's network: like
    // travis-ci/worker, don't pin host keys.
    hostVerifier: () => true,
  };
  if (target.privateKey !== undefined) config.privateKey = target.privateKey;
  if (target.password !== undefined) config.password = target.password;
  return config;
}

/** A TCP connection to `target`, within `timeoutMs`. */
function connectTcp(target: SshTarget, options: ConnectOptions): Promise<Socket> {
  const { signal } = options;
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<Socket>((resolve, reject) => {
    const socket = new Socket();
    const done = (err: unknown): void => {
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
      socket.off('connect', onConnect).off('error', done);
      if (err === undefined) {
        resolve(socket);
      } else {
        socket.destroy();
        reject(err);
      }
    };
    const onConnect = (): void => done(undefined);
    const onAbort = (): void => done(signal.reason);
    const timer = setTimeout(() => done(new Error(`TCP connect timed out after ${options.timeoutMs} ms`)), options.timeoutMs);
    signal.addEventListener('abort', onAbort, { once: true });
    socket.once('connect', onConnect).once('error', done);
    socket.connect({ host: target.host, port: target.port });
  });
}

/**
 * One connection attempt; resolves with an authenticated connection. The
 * TCP connect runs at once; the SSH handshake waits for one of
 * MAX_CONCURRENT_HANDSHAKES turns.
 */
export async function connectOnce(target: SshTarget, options: ConnectOptions): Promise<SshConnection> {
  const { signal } = options;
  const config = connectConfig(target, options.timeoutMs);
  const socket = await connectTcp(target, options);
  // The target may hang up while this attempt waits for its turn.
  let socketError: Error | undefined;
  const onWaitError = (err: Error): void => {
    socketError ??= err;
  };
  socket.on('error', onWaitError);
  let release: () => void;
  try {
    release = await handshakes.acquire(signal);
  } catch (err) {
    socket.destroy();
    throw err;
  }
  socket.off('error', onWaitError);
  if (socketError !== undefined || socket.destroyed || !socket.readable) {
    release();
    socket.destroy();
    throw socketError ?? new Error('the connection closed while waiting for its turn to handshake');
  }
  return handshake(target, socket, config, signal).finally(release);
}

/** The SSH handshake and authentication over a connected socket. */
function handshake(target: SshTarget, socket: Socket, config: ConnectConfig, signal: AbortSignal): Promise<SshConnection> {
  const client = new ssh2.Client();
  return new Promise<SshConnection>((resolve, reject) => {
    const cleanup = (): void => {
      signal.removeEventListener('abort', onAbort);
      client.off('ready', onReady).off('error', onError).off('close', onClose);
    };
    const fail = (err: unknown): void => {
      cleanup();
      // Errors after this point (a late socket error) must not be unhandled.
      client.on('error', () => {});
      client.destroy();
      socket.destroy();
      reject(err);
    };
    const onAbort = (): void => fail(signal.reason);
    const onError = (err: Error): void => fail(err);
    const onClose = (): void => fail(new Error('connection closed during the SSH handshake'));
    const onReady = (): void => {
      cleanup();
      // The owner listens for 'close'; an 'error' always precedes it and must not crash the process.
      client.on('error', () => {});
      resolve(new SshConnection(client));
    };
    if (signal.aborted) {
      onAbort();
      return;
    }
    signal.addEventListener('abort', onAbort, { once: true });
    client.on('ready', onReady).on('error', onError).on('close', onClose);
    try {
      client.connect({ ...config, sock: socket });
    } catch (err) {
      // Thrown synchronously only for bad settings (an unparseable key): retrying would not help.
      fail(new SshUnreachableError(`cannot connect to ${describeTarget(target)}: ${errorMessage(err)}`, { cause: err }));
    }
  });
}

/**
 * Connect, retrying until it works. Throws `signal.reason` when the signal
 * aborts, `SshUnreachableError` when the attempts run out.
 */
export async function dial(target: SshTarget, options: DialOptions): Promise<SshConnection> {
  const { signal, logger } = options;
  const maxAttempts = Math.max(1, options.maxAttempts ?? DEFAULT_MAX_ATTEMPTS);
  const timeoutMs = options.dialTimeoutMs ?? DEFAULT_DIAL_TIMEOUT_MS;
  const retrySleepMs = options.retrySleepMs ?? DEFAULT_RETRY_SLEEP_MS;
  const where = describeTarget(target);
  const refusedPauses = growingDelays(REFUSED_FIRST_PAUSE_MS, Math.min(REFUSED_MAX_PAUSE_MS, retrySleepMs));
  /**
   * Retry sleeps used up, of the `maxAttempts - 1` travis waits between its
   * attempts. A pause after a refusal counts for its share of one, so the
   * attempts last as long as travis' did however many were refused.
   */
  let sleepsUsed = 0;
  let attempt = 0;
  let lastError: unknown;
  for (;;) {
    attempt += 1;
    if (signal.aborted) throw signal.reason;
    try {
      return await connectOnce(target, { signal, timeoutMs });
    } catch (err) {
      if (signal.aborted) throw signal.reason;
      if (err instanceof SshUnreachableError) throw err;
      lastError = err;
      logger.debug({ target: where, attempt, maxAttempts, err: errorMessage(err) }, 'ssh connection attempt failed');
    }
    // Refused: nothing listens yet, and the attempt took no time. Anything else (a timeout, a reset) waits the full sleep.
    const refused = (lastError as NodeJS.ErrnoException | undefined)?.code === 'ECONNREFUSED';
    if (sleepsUsed >= maxAttempts - 1) break;
    const pause = refused ? refusedPauses.next().value : retrySleepMs;
    sleepsUsed += refused && retrySleepMs > 0 ? pause / retrySleepMs : 1;
    try {
      await sleep(pause, undefined, { signal });
    } catch {
      throw signal.reason;
    }
  }
  throw new SshUnreachableError(
    `could not connect to ${where} after ${attempt} attempts: ${errorMessage(lastError)}`,
    { cause: lastError, userMessage: 'The build machine could not be reached over SSH.' },
  );
}
