/**
 * The SSH machine: the `Instance` half every SSH-reached backend (gce, ec2,
 * docker, ssh) builds its own instance on. The backend makes or picks a
 * machine and knows its address; this class waits for SSH, uploads the script, runs it under a terminal, and
 * hands the machine back to the backend through `release`.
 */
import { Writable } from 'node:stream';
import type { BootPhase, Instance, RunOptions, RunResult, UploadOptions } from '../backend/contract.js';
import { ConnectionLostError, UploadError } from '../errors.js';
import { silentLogger, type Logger } from '../logger.js';
import type { SshConnection } from './connection.js';
import { dial } from './dial.js';
import { runCommand } from './run.js';
import type { SshTarget } from './target.js';
import { uploadScript } from './upload.js';

/** Where travis-ci/worker puts the script: relative to the SFTP start directory, i.e. the home directory. */
export const DEFAULT_SCRIPT_PATH = 'build.sh';
/** How travis-ci/worker runs it. */
export const DEFAULT_RUN_COMMAND = 'bash ~/build.sh';
/** Output kept from a housekeeping command (`exec`), for log lines; the rest is dropped. */
const EXEC_OUTPUT_LIMIT_BYTES = 16 * 1024;

export type { SshTarget } from './target.js';

export interface SshMachineOptions {
  /** The backend's id for the machine (instance name, host name, container id). */
  id: string;
  imageName: string;
  /** How long the backend's `start` took, in ms. */
  startupMs: number;
  target: SshTarget;
  /** Per connection attempt, in ms; default 5000 (travis `SSH_DIAL_TIMEOUT`). */
  dialTimeoutMs?: number;
  /** Between connection attempts, in ms; default 1000 (travis `UPLOAD_RETRY_SLEEP`). */
  retrySleepMs?: number;
  /** Connection attempts for `upload`; default 120 (travis `UPLOAD_RETRIES`). The upload signal bounds it too. */
  maxAttempts?: number;
  /** Where the script goes; default `build.sh`, relative to the SFTP start directory (home). */
  scriptPath?: string;
  /** What runs it; default `bash ~/build.sh`. */
  runCommand?: string;
  /** Called once by `destroy()` after the connection is closed: the backend frees the machine. */
  release?: () => Promise<void>;
  logger?: Logger;
}

export interface ExecOptions {
  signal: AbortSignal;
  /** Connection attempts when no connection is open; default 1. */
  maxAttempts?: number;
}

/** How a housekeeping command ended, with the start of its output (stdout and stderr). */
export interface ExecResult extends RunResult {
  output: string;
}

/** Keeps the first `limit` bytes written to it and swallows the rest. */
class BoundedCapture extends Writable {
  readonly #chunks: Buffer[] = [];
  #size = 0;
  constructor(private readonly limit: number) {
    super();
  }
  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (this.#size < this.limit) {
      const kept = chunk.subarray(0, this.limit - this.#size);
      this.#chunks.push(kept);
      this.#size += kept.length;
    }
    callback();
  }
  text(): string {
    return Buffer.concat(this.#chunks).toString('utf8');
  }
}

export class SshMachine implements Instance {
  readonly id: string;
  readonly imageName: string;
  readonly startupMs: number;
  readonly #options: SshMachineOptions;
  readonly #logger: Logger;
  #connection: SshConnection | undefined;
  #destroyed: Promise<void> | undefined;
  /** Set by the first destroy(), for good: no new connection after it. */
  #destroyRequested = false;

  constructor(options: SshMachineOptions) {
    this.id = options.id;
    this.imageName = options.imageName;
    this.startupMs = options.startupMs;
    this.#options = options;
    this.#logger = options.logger ?? silentLogger;
  }

  /** The target this instance talks to (for backends' log lines). */
  get target(): SshTarget {
    return this.#options.target;
  }

  /** True while a connection made by `upload` or `exec` is open. */
  get connected(): boolean {
    return this.#connection?.isOpen === true;
  }

  /**
   * Wait for SSH (retrying), then upload the script. Throws
   * `SshUnreachableError`, `StaleVmError`, `UploadError`, or `signal.reason`.
   * The connection stays open for `run`.
   */
  async upload(script: Buffer, options: UploadOptions): Promise<void> {
    const connection = await this.#connect(options.signal, this.#options.maxAttempts);
    await uploadScript(connection.client, script, {
      path: this.#options.scriptPath ?? DEFAULT_SCRIPT_PATH,
      signal: options.signal,
    });
  }

  /**
   * Run the uploaded script under a terminal, streaming into `output`
   * (never ended here). Throws `ConnectionLostError` when the connection is
   * gone or drops; on abort, kills the script and rejects with `signal.reason`.
   */
  async run(options: RunOptions): Promise<RunResult> {
    const connection = this.#connection;
    if (connection === undefined || !connection.isOpen) {
      throw new ConnectionLostError('no open connection to run the script on (upload first)', {
        userMessage: 'The connection to the build machine was lost; the job will be run again.',
      });
    }
    return runCommand(connection, this.#options.runCommand ?? DEFAULT_RUN_COMMAND, {
      output: options.output,
      signal: options.signal,
    });
  }

  /**
   * `upload`, timed in two boot phases for the metrics: until SSH accepts
   * (`ssh-ready`, over up to `maxAttempts` connection attempts) and the
   * upload itself (`upload`). Resolves with how long SSH took to come up, in ms.
   */
  async timedUpload(
    script: Buffer,
    options: UploadOptions & { maxAttempts?: number },
    recordPhase: (phase: BootPhase, durationMs: number) => void,
  ): Promise<number> {
    const began = Date.now();
    // A no-op command opens the connection that the upload (and the run) reuse.
    await this.exec('true', { signal: options.signal, maxAttempts: options.maxAttempts ?? this.#options.maxAttempts ?? 1 });
    const sshReadyMs = Date.now() - began;
    recordPhase('ssh-ready', sshReadyMs);
    const uploading = Date.now();
    await this.upload(script, { signal: options.signal });
    recordPhase('upload', Date.now() - uploading);
    return sshReadyMs;
  }

  /**
   * Wait for SSH (up to `maxAttempts` connection attempts, default the
   * machine's own) and run `true` there; the connection stays open for
   * `upload`. Throws like `upload` when SSH does not come up, `UploadError`
   * when the command does not succeed (a shell that cannot run anything
   * would not run the script either).
   */
  async probe(signal: AbortSignal, maxAttempts = this.#options.maxAttempts): Promise<void> {
    const result = await this.exec('true', { signal, ...(maxAttempts === undefined ? {} : { maxAttempts }) });
    if (result.exitCode !== 0) {
      throw new UploadError(`instance ${this.id} answered SSH, but \`true\` exited with ${result.exitCode ?? `signal ${result.signal ?? '?'}`}`);
    }
  }

  /**
   * Run a housekeeping command without a terminal (removing the script,
   * resetting a persistent host), over the open connection or a new one.
   * Throws like `upload` does when it can't connect, `ConnectionLostError`
   * when the connection drops.
   */
  async exec(command: string, options: ExecOptions): Promise<ExecResult> {
    const connection = await this.#connect(options.signal, options.maxAttempts ?? 1);
    const capture = new BoundedCapture(EXEC_OUTPUT_LIMIT_BYTES);
    const result = await runCommand(connection, command, {
      output: capture,
      signal: options.signal,
      pty: false,
    });
    return { ...result, output: capture.text() };
  }

  /**
   * Close the connection, then let the backend release the machine.
   * Idempotent once it succeeded; a failed release (a cloud delete that
   * failed) is tried again by the next call, which is how destroyInstance's
   * retries reach the cloud.
   */
  destroy(): Promise<void> {
    this.#destroyRequested = true;
    this.#destroyed ??= (async () => {
      const connection = this.#connection;
      this.#connection = undefined;
      await connection?.close();
      await this.#options.release?.();
    })().catch((err: unknown) => {
      this.#destroyed = undefined;
      throw err;
    });
    return this.#destroyed;
  }

  /** The open connection, or a new one (replacing one that dropped). */
  async #connect(signal: AbortSignal, maxAttempts: number | undefined): Promise<SshConnection> {
    if (this.#destroyRequested) throw new UploadError(`instance ${this.id} is already destroyed`);
    if (this.#connection?.isOpen === true) return this.#connection;
    const options = this.#options;
    const connection = await dial(options.target, {
      signal,
      logger: this.#logger,
      ...(options.dialTimeoutMs === undefined ? {} : { dialTimeoutMs: options.dialTimeoutMs }),
      ...(options.retrySleepMs === undefined ? {} : { retrySleepMs: options.retrySleepMs }),
      ...(maxAttempts === undefined ? {} : { maxAttempts }),
    });
    if (this.#destroyRequested) {
      // destroy() ran while we dialled: nobody would close this connection.
      await connection.close();
      throw new UploadError(`instance ${this.id} was destroyed while connecting`);
    }
    await this.#connection?.close();
    this.#connection = connection;
    return connection;
  }
}
