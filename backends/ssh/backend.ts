/**
 * The `ssh` backend: jobs on a fixed list of persistent machines (Mac minis,
 * bare-metal boxes) reached over SSH, one job per machine at a time.
 */
import {
  SshMachine,
  type Backend,
  type BackendContext,
  type Instance,
  type StartAttributes,
  type StartOptions,
  type SshTarget,
} from '../../src/backend/kit.js';
import { PersistentHostInstance } from './instance.js';
import { HostPool } from './pool.js';
import { credentials, parseHosts, type SshBackendSettings } from './settings.js';

/** What `imageName` reports: a persistent host runs whatever it has, not an image the job chose. */
const IMAGE_NAME = 'ssh-host';

export class SshBackend implements Backend {
  readonly #pool: HostPool;
  readonly #settings: SshBackendSettings;
  readonly #credentials: Pick<SshTarget, 'privateKey' | 'password'>;

  /** Takes settings that passed `validateSettings` (the loader's `validate` hook). */
  constructor(settings: SshBackendSettings, context: BackendContext) {
    this.#settings = settings;
    this.#credentials = credentials(settings);
    this.#pool = new HostPool(parseHosts(settings.hosts), {
      maxFailures: settings.maxFailures,
      quarantineMs: settings.quarantine,
      logger: context.logger,
    });
  }

  /** Hosts out of rotation right now (labels). */
  quarantined(): string[] {
    return this.#pool.quarantined();
  }

  async start(_attributes: StartAttributes, options: StartOptions): Promise<Instance> {
    const began = Date.now();
    const lease = await this.#pool.acquire(options.signal);
    const { address } = lease;
    options.progress(`Using host ${address.label}`);
    const settings = this.#settings;
    const logger = options.logger.child({ host: address.label });
    const inner = new SshMachine({
      id: address.label,
      imageName: IMAGE_NAME,
      startupMs: Date.now() - began,
      target: { host: address.host, port: address.port, username: settings.user, ...this.#credentials },
      dialTimeoutMs: settings.dialTimeout,
      retrySleepMs: settings.uploadRetrySleep,
      maxAttempts: settings.uploadRetries,
      logger,
    });
    return new PersistentHostInstance(inner, {
      resetCommand: settings.resetCommand.trim() === '' ? undefined : settings.resetCommand,
      cleanupAttempts: settings.uploadRetries,
      // Called after the connection is closed: only then may another job have the host.
      release: (outcome) => lease.release(outcome),
      logger,
    });
  }

  async close(): Promise<void> {
    this.#pool.close();
  }
}
