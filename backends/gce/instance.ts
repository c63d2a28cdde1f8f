/**
 * One job's GCE VM as the pipeline sees it: SSH (wait, upload, run under a
 * PTY) through `SshMachine`, plus what only GCE knows: whether a dropped
 * run means the VM was preempted, and how to delete the VM.
 */
import {
  ConnectionLostError,
  errorMessage,
  type BootPhase,
  type Instance,
  type RunOptions,
  type RunResult,
  type UploadOptions,
  type Logger,
  type SshMachine,
} from '../../src/backend/kit.js';

export interface GceInstanceOptions {
  ssh: SshMachine;
  /** `Instance.vmSize`: what travis reports as the job's `vm_size`. */
  vmSize?: string | undefined;
  /** Where SSH is reached, for progress lines. */
  address: string;
  sshAttempts: number;
  /** When the VM may be preempted, every run ends with a check (as travis does). */
  preemptible: boolean;
  /** True when the VM was preempted or stopped under the job. */
  wasPreempted(): Promise<boolean>;
  /** Delete the VM (retried inside); throws when it may still exist. */
  delete(): Promise<void>;
  progress(line: string): void;
  recordPhase(phase: BootPhase, durationMs: number): void;
  logger: Logger;
}

const seconds = (ms: number): string => `${(ms / 1000).toFixed(1)}s`;

export class GceInstance implements Instance {
  readonly id: string;
  readonly imageName: string;
  readonly startupMs: number;
  readonly vmSize: string | undefined;
  readonly #options: GceInstanceOptions;
  #deleting: Promise<void> | undefined;

  constructor(options: GceInstanceOptions) {
    this.#options = options;
    this.id = options.ssh.id;
    this.imageName = options.ssh.imageName;
    this.startupMs = options.ssh.startupMs;
    this.vmSize = options.vmSize;
  }

  async upload(script: Buffer, options: UploadOptions): Promise<void> {
    const { ssh, progress, recordPhase } = this.#options;
    progress(`waiting for SSH on ${this.#options.address}`);
    await ssh.timedUpload(script, { signal: options.signal, maxAttempts: this.#options.sshAttempts }, (phase, ms) => {
      recordPhase(phase, ms);
      if (phase === 'ssh-ready') progress(`SSH ready after ${seconds(ms)}`);
    });
  }

  /** Wait for SSH and run a no-op there (the warm pool's readiness probe); the connection stays for `upload`. */
  probe(signal: AbortSignal): Promise<void> {
    return this.#options.ssh.probe(signal, this.#options.sshAttempts);
  }

  /**
   * Run the script; when the run broke (connection lost, killed) or the VM
   * is preemptible, ask GCE whether the VM was preempted: then the job's
   * outcome is unknown and it is run again (travis reports it as passed).
   */
  async run(options: RunOptions): Promise<RunResult> {
    let result: RunResult | undefined;
    let failure: unknown;
    try {
      result = await this.#options.ssh.run(options);
    } catch (err) {
      if (options.signal.aborted) throw err;
      failure = err;
    }
    if (failure !== undefined || result?.signal !== undefined || this.#options.preemptible) {
      if (await this.#options.wasPreempted()) {
        this.#options.logger.warn({ instance: this.id }, 'instance was preempted while the job ran');
        throw new ConnectionLostError(`instance ${this.id} was preempted while the job ran`, {
          cause: failure,
          userMessage: 'The build VM was preempted by Google Compute Engine; the job will be run again.',
        });
      }
    }
    if (failure !== undefined) throw failure;
    return result as RunResult;
  }

  /** Close SSH, then delete the VM. Idempotent; a failed deletion may be tried again by calling again. */
  async destroy(): Promise<void> {
    await this.#options.ssh.destroy().catch((err: unknown) => {
      this.#options.logger.warn({ instance: this.id, err: errorMessage(err) }, 'closing the SSH connection failed');
    });
    this.#deleting ??= this.#options.delete().catch((err: unknown) => {
      this.#deleting = undefined;
      throw err;
    });
    return this.#deleting;
  }
}
