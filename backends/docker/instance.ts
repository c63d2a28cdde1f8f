/**
 * One job's container once it runs. Upload and run go over SSH (the
 * default, through `SshMachine` with the job's own key) or through the
 * Engine API (native mode). While the script runs, the container is watched
 * (`POST /containers/{id}/wait`): a container that stops under the script
 * (killed, out of memory, the engine restarted) ends the run with
 * `ConnectionLostError`, which requeues the job. Destroy stops the container
 * with a grace period, force-removes it, and gives its cores back, on every path.
 */
import {
  ConnectionLostError,
  InstanceStartError,
  errorMessage,
  abortableSleep,
  timeoutSignal,
  type BootPhase,
  type Instance,
  type RunOptions,
  type RunResult,
  type UploadOptions,
  type Logger,
  type SshMachine,
} from '../../src/backend/kit.js';
import type { DockerEngine } from './engine.js';
import { runNative, uploadNative } from './native.js';

/**
 * After a script ended the way a killed process does, how long to wait for
 * the container watch to say whether the container itself died (the engine
 * may close the output a moment before it notices the container's exit).
 */
const DEATH_CHECK_MS = 3_000;
/** Time allowed for the engine calls of a destroy, beyond the stop's grace period. */
const DESTROY_SLACK_MS = 30_000;
/** SSH connection attempts while the container's sshd comes up; the upload timeout bounds them too. */
const SSH_READY_ATTEMPTS = 120;

export interface NativeOptions {
  execCmd: string[];
  tty: boolean;
  env: string[];
  inspectIntervalMs: number;
}

export interface DockerInstanceOptions {
  engine: DockerEngine;
  containerId: string;
  imageName: string;
  startupMs: number;
  /** SSH mode: the session into the container. Undefined in native mode. */
  ssh: SshMachine | undefined;
  native: NativeOptions;
  /** Grace period between SIGTERM and SIGKILL on destroy, in ms. */
  stopTimeoutMs: number;
  recordPhase: (phase: BootPhase, durationMs: number) => void;
  /** Gives the container's cores back; called once, whatever happened. */
  release: () => void;
  logger: Logger;
}

function containerLost(id: string, exitStatus: number | undefined): ConnectionLostError {
  return new ConnectionLostError(
    `container ${id} stopped while the script ran${exitStatus === undefined ? '' : ` (its main process exited with ${exitStatus})`}`,
    { userMessage: 'The container running this job stopped unexpectedly; the job will be run again.' },
  );
}

/** An outcome that a dying container also produces: killed by a signal, or 128+signal. */
function looksKilled(result: RunResult): boolean {
  return result.exitCode === null || result.exitCode > 128 || result.exitCode < 0;
}

export class DockerInstance implements Instance {
  readonly id: string;
  readonly imageName: string;
  readonly startupMs: number;
  readonly #options: DockerInstanceOptions;
  #released = false;
  #destroyed: Promise<void> | undefined;

  constructor(options: DockerInstanceOptions) {
    this.#options = options;
    this.id = options.containerId.slice(0, 12);
    this.imageName = options.imageName;
    this.startupMs = options.startupMs;
  }

  /** The full container id. */
  get containerId(): string {
    return this.#options.containerId;
  }

  async upload(script: Buffer, options: UploadOptions): Promise<void> {
    const { ssh, engine, containerId, recordPhase } = this.#options;
    const began = Date.now();
    if (ssh === undefined) {
      await uploadNative(engine, containerId, script, options.signal);
      recordPhase('upload', Date.now() - began);
      return;
    }
    await ssh.timedUpload(script, { signal: options.signal, maxAttempts: SSH_READY_ATTEMPTS }, recordPhase);
  }

  /**
   * The warm pool's readiness probe: in SSH mode, wait for sshd and run a
   * no-op over the connection `upload` then reuses; in native mode (no
   * sshd), the container must still be running.
   */
  async probe(signal: AbortSignal): Promise<void> {
    const { ssh, engine, containerId } = this.#options;
    if (ssh !== undefined) {
      await ssh.probe(signal, SSH_READY_ATTEMPTS);
      return;
    }
    const info = await engine.inspectContainer(containerId, signal);
    if (info?.State.Running !== true) throw new InstanceStartError(`container ${this.id} is not running`);
  }

  async run(options: RunOptions): Promise<RunResult> {
    const { ssh, engine, containerId, native, logger } = this.#options;
    const watchStop = new AbortController();
    const died = new AbortController();
    const watching = this.#watch(died, AbortSignal.any([watchStop.signal, options.signal]));
    const signal = AbortSignal.any([options.signal, died.signal]);
    try {
      const result =
        ssh === undefined
          ? await runNative({ engine, containerId, ...native, output: options.output, signal, logger })
          : await ssh.run({ output: options.output, signal });
      if (looksKilled(result) && (await this.#diesWithin(died.signal, DEATH_CHECK_MS, options.signal))) throw died.signal.reason;
      return result;
    } catch (err) {
      if (options.signal.aborted) throw err;
      if (died.signal.aborted) throw died.signal.reason;
      throw err;
    } finally {
      watchStop.abort();
      await watching;
    }
  }

  /** Close SSH, stop, force-remove, give the cores back. Idempotent; a failed destroy may be tried again. */
  destroy(): Promise<void> {
    this.#destroyed ??= this.#teardown().catch((err: unknown) => {
      this.#destroyed = undefined;
      throw err;
    });
    return this.#destroyed;
  }

  async #teardown(): Promise<void> {
    const { ssh, engine, containerId, stopTimeoutMs, logger } = this.#options;
    try {
      await ssh?.destroy();
      // The sum can pass the longest a timer waits when the grace period is at its maximum.
      const signal = timeoutSignal(stopTimeoutMs + DESTROY_SLACK_MS);
      try {
        await engine.stopContainer(containerId, Math.ceil(stopTimeoutMs / 1000), signal);
      } catch (err) {
        // Removal below is forced: a container that would not stop is killed there.
        logger.warn({ container: this.id, err: errorMessage(err) }, 'could not stop container; removing it by force');
      }
      await engine.removeContainer(containerId, signal);
    } finally {
      if (!this.#released) {
        this.#released = true;
        this.#options.release();
      }
    }
  }

  /** Until `signal` aborts: abort `died` when the container stops. A failing watch never ends the run. */
  async #watch(died: AbortController, signal: AbortSignal): Promise<void> {
    const { engine, containerId, logger } = this.#options;
    try {
      const status = await engine.waitContainer(containerId, signal);
      logger.warn({ container: this.id, status }, 'container stopped while the script ran');
      died.abort(containerLost(this.id, status));
    } catch (err) {
      if (signal.aborted) return;
      if (/no such container/i.test(errorMessage(err))) {
        died.abort(containerLost(this.id, undefined));
        return;
      }
      logger.warn({ container: this.id, err: errorMessage(err) }, 'cannot watch the container while the script runs');
    }
  }

  /** Whether `died` aborts within `ms` (or has already). */
  async #diesWithin(died: AbortSignal, ms: number, jobSignal: AbortSignal): Promise<boolean> {
    if (died.aborted) return true;
    try {
      await abortableSleep(ms, AbortSignal.any([died, jobSignal]));
    } catch {
      // woken early: by the death, or by the job's own abort
    }
    return died.aborted;
  }
}
