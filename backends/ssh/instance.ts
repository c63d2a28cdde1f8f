/**
 * One job on a persistent host. Upload and run are the shared SSH ones; what
 * differs from a throw-away VM is the end: the host is cleaned for the next
 * job (script removed, optional reset command) and its health recorded.
 */
import {
  SshUnreachableError,
  errorMessage,
  isMayflyError,
  type Instance,
  type RunOptions,
  type RunResult,
  type UploadOptions,
  type ErrorCode,
  type Logger,
  type SshMachine,
} from '../../src/backend/kit.js';
import type { HostOutcome } from './pool.js';

/**
 * Errors that say the host (not the job) is in trouble. An aborted upload or
 * run rethrows the job's signal reason, which is none of these unless the
 * upload timed out, which is the host's fault too.
 */
const HOST_FAILURE_CODES: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  'E_SSH_UNREACHABLE',
  'E_UPLOAD',
  'E_UPLOAD_TIMEOUT',
  'E_STALE_VM',
  'E_CONNECTION_LOST',
]);

/** Removes the script where upload put it (`build.sh` in the SFTP start directory, the home directory). */
const REMOVE_SCRIPT_COMMAND = 'rm -f ~/build.sh';
/**
 * Bound on cleaning a host after a job. A reset command may restore a VM
 * snapshot, which takes minutes; a host that needs longer counts as failed.
 */
const CLEANUP_TIMEOUT_MS = 10 * 60_000;

export interface PersistentHostInstanceOptions {
  /** Command run after each job; undefined = none. */
  resetCommand: string | undefined;
  /** Connection attempts when cleanup needs a new connection. */
  cleanupAttempts: number;
  /** Called once, after the connection is closed, with how the host fared. */
  release: (outcome: HostOutcome) => void;
  logger: Logger;
}

export class PersistentHostInstance implements Instance {
  readonly #inner: SshMachine;
  readonly #options: PersistentHostInstanceOptions;
  /** The first infrastructure failure seen on this host during the job. */
  #failure: string | undefined;
  /** Whether a script may be on the host (an upload reached it). */
  #uploadReachedHost = false;
  #destroyed: Promise<void> | undefined;

  constructor(inner: SshMachine, options: PersistentHostInstanceOptions) {
    this.#inner = inner;
    this.#options = options;
  }

  get id(): string {
    return this.#inner.id;
  }

  get imageName(): string {
    return this.#inner.imageName;
  }

  get startupMs(): number {
    return this.#inner.startupMs;
  }

  async upload(script: Buffer, options: UploadOptions): Promise<void> {
    try {
      await this.#inner.upload(script, options);
      this.#uploadReachedHost = true;
    } catch (err) {
      // Unless the host was never reached, a (partial) script may be there.
      if (!(err instanceof SshUnreachableError)) this.#uploadReachedHost = true;
      this.#noteFailure(err);
      throw err;
    }
  }

  async run(options: RunOptions): Promise<RunResult> {
    try {
      return await this.#inner.run(options);
    } catch (err) {
      this.#noteFailure(err);
      throw err;
    }
  }

  /** Clean the host, close the connection and hand the host back. Never throws; idempotent. */
  destroy(): Promise<void> {
    this.#destroyed ??= (async () => {
      if (this.#uploadReachedHost) await this.#cleanUp();
      const outcome: HostOutcome = this.#failure === undefined ? { ok: true } : { ok: false, reason: this.#failure };
      try {
        await this.#inner.destroy();
      } finally {
        this.#options.release(outcome);
      }
    })();
    return this.#destroyed;
  }

  #noteFailure(err: unknown): void {
    if (this.#failure === undefined && isMayflyError(err) && HOST_FAILURE_CODES.has(err.code)) {
      this.#failure = `${err.code}: ${err.message}`;
    }
  }

  /** Remove the script so the next job does not find a "stale VM", then reset the host. */
  async #cleanUp(): Promise<void> {
    const signal = AbortSignal.timeout(CLEANUP_TIMEOUT_MS);
    const commands = [REMOVE_SCRIPT_COMMAND];
    if (this.#options.resetCommand !== undefined) commands.push(this.#options.resetCommand);
    for (const command of commands) {
      try {
        const result = await this.#inner.exec(command, { signal, maxAttempts: this.#options.cleanupAttempts });
        if (result.exitCode !== 0) {
          this.#failure ??= `"${command}" ended with ${result.exitCode ?? result.signal}: ${result.output.trim()}`;
          this.#options.logger.warn(
            { host: this.#inner.id, command, exitCode: result.exitCode, signal: result.signal, output: result.output },
            'ssh host cleanup command failed',
          );
        }
      } catch (err) {
        this.#failure ??= `"${command}" failed: ${errorMessage(err)}`;
        this.#options.logger.warn({ host: this.#inner.id, command, err: errorMessage(err) }, 'ssh host cleanup failed');
        return; // the host can't be reached: the next command would fail the same way
      }
    }
  }
}
