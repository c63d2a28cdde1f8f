/**
 * The rotation of persistent hosts: one job per host at a time, the least
 * recently used free host first, and hosts that keep failing taken out of
 * rotation for a while (quarantine) so jobs stop landing on a dead machine.
 */
import { NoCapacityError, type Logger } from '../../src/backend/kit.js';
import type { HostAddress } from './settings.js';

export interface HostPoolOptions {
  /** Consecutive failures that take a host out of rotation (at least 1). */
  maxFailures: number;
  /** How long it stays out, in ms. */
  quarantineMs: number;
  /** The worker's logger: hosts leaving and rejoining the rotation are worker events, not job events. */
  logger: Logger;
}

/** How a job on a host went, from the host's point of view. */
export type HostOutcome = { ok: true } | { ok: false; reason: string };

/** A host held by one job until `release`. */
export interface HostLease {
  readonly address: HostAddress;
  /** Give the host back; call exactly once (later calls are ignored). */
  release(outcome: HostOutcome): void;
}

interface HostState {
  address: HostAddress;
  busy: boolean;
  /** Consecutive failures. */
  failures: number;
  /** Set while out of rotation; fires when it rejoins. */
  quarantine: NodeJS.Timeout | undefined;
  /** Order of the last time it was taken (0 = never), for least-recently-used choice. */
  lastTaken: number;
}

export class HostPool {
  readonly #hosts: HostState[];
  readonly #options: HostPoolOptions;
  /** Woken whenever a host may have become available. */
  #waiters: (() => void)[] = [];
  #taken = 0;

  constructor(addresses: readonly HostAddress[], options: HostPoolOptions) {
    this.#hosts = addresses.map((address) => ({ address, busy: false, failures: 0, quarantine: undefined, lastTaken: 0 }));
    this.#options = { ...options, maxFailures: Math.max(1, options.maxFailures) };
  }

  /**
   * Take a free host, waiting for one to be released or to rejoin the
   * rotation. Throws `NoCapacityError` when every host is out of rotation
   * and none is busy (nothing would wake us), `signal.reason` on abort.
   */
  async acquire(signal: AbortSignal): Promise<HostLease> {
    for (;;) {
      if (signal.aborted) throw signal.reason;
      const host = this.#pick();
      if (host !== undefined) return this.#lease(host);
      if (!this.#hosts.some((candidate) => candidate.busy)) {
        throw new NoCapacityError(`all ${this.#hosts.length} ssh hosts are out of rotation after repeated failures`);
      }
      await this.#changed(signal);
    }
  }

  /** Hosts currently out of rotation (labels), for logs and tests. */
  quarantined(): string[] {
    return this.#hosts.filter((host) => host.quarantine !== undefined).map((host) => host.address.label);
  }

  /** Stop quarantine timers (worker shutdown). */
  close(): void {
    for (const host of this.#hosts) clearTimeout(host.quarantine);
  }

  #pick(): HostState | undefined {
    let best: HostState | undefined;
    for (const host of this.#hosts) {
      if (host.busy || host.quarantine !== undefined) continue;
      if (best === undefined || host.lastTaken < best.lastTaken) best = host;
    }
    return best;
  }

  #lease(host: HostState): HostLease {
    host.busy = true;
    this.#taken += 1;
    host.lastTaken = this.#taken;
    let released = false;
    return {
      address: host.address,
      release: (outcome) => {
        if (released) return;
        released = true;
        host.busy = false;
        this.#record(host, outcome);
        this.#wake();
      },
    };
  }

  #record(host: HostState, outcome: HostOutcome): void {
    const { logger, maxFailures, quarantineMs } = this.#options;
    if (outcome.ok) {
      host.failures = 0;
      return;
    }
    host.failures += 1;
    logger.warn({ host: host.address.label, failures: host.failures, reason: outcome.reason }, 'ssh host failed');
    if (host.failures < maxFailures || host.quarantine !== undefined) return;
    logger.warn(
      { host: host.address.label, failures: host.failures, quarantineMs },
      'ssh host taken out of rotation after repeated failures',
    );
    host.quarantine = setTimeout(() => {
      host.quarantine = undefined;
      // One more failure sends it straight back: it has not proved itself yet.
      host.failures = maxFailures - 1;
      logger.info({ host: host.address.label }, 'ssh host rejoins rotation');
      this.#wake();
    }, quarantineMs);
    // A quarantine alone must not keep the worker alive at shutdown.
    host.quarantine.unref();
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const wake of waiters) wake();
  }

  #changed(signal: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      const onAbort = (): void => {
        this.#waiters = this.#waiters.filter((waiter) => waiter !== wake);
        reject(signal.reason);
      };
      const wake = (): void => {
        signal.removeEventListener('abort', onAbort);
        resolve();
      };
      signal.addEventListener('abort', onAbort, { once: true });
      this.#waiters.push(wake);
    });
  }
}
