/**
 * One job's VM once SSH answers: probe (the warm pool's), upload and run
 * go over SSH (`SshMachine`, with the job's own key). While the script
 * runs, the QEMU process is watched: a VM that ends under the script
 * (QEMU crashed or was killed, the guest panicked or rebooted) ends the run
 * with `ConnectionLostError`, which requeues the job. Destroy powers the VM
 * off (gently, then surely), removes its files and gives back what it held,
 * on every path.
 */
import {
  ConnectionLostError,
  errorMessage,
  type BootPhase,
  type Instance,
  type Logger,
  type RunOptions,
  type RunResult,
  type SshMachine,
  type UploadOptions,
} from '../../src/backend/kit.js';
import { describeExit, type QemuVm, type VmExit } from './vm.js';

/**
 * After a script ended the way a killed process does, how long to wait for
 * QEMU's exit to say whether the VM itself died (the guest's connection can
 * drop a moment before the process is reaped).
 */
const DEATH_CHECK_MS = 3_000;

export interface QemuInstanceOptions {
  ssh: SshMachine;
  vm: QemuVm;
  /** How long the start took, boot to SSH included, in ms. */
  startupMs: number;
  /** Stop the VM and remove its directory; gives back its cores, port or address. Idempotent. */
  teardown: () => Promise<void>;
  recordPhase: (phase: BootPhase, durationMs: number) => void;
  logger: Logger;
}

/** The error a VM that ended under the job becomes. */
export function vmLost(id: string, exit: VmExit): ConnectionLostError {
  return new ConnectionLostError(`VM ${id} stopped while the script ran (${describeExit(exit)})`, {
    userMessage: 'The virtual machine running this job stopped unexpectedly; the job will be run again.',
  });
}

export class QemuInstance implements Instance {
  readonly id: string;
  readonly imageName: string;
  readonly startupMs: number;
  readonly #options: QemuInstanceOptions;
  #destroyed: Promise<void> | undefined;

  constructor(options: QemuInstanceOptions) {
    this.#options = options;
    this.id = options.ssh.id;
    this.imageName = options.ssh.imageName;
    this.startupMs = options.startupMs;
  }

  /** The SSH connection is open already (start waited for it): only the script goes up here. */
  async upload(script: Buffer, options: UploadOptions): Promise<void> {
    const began = Date.now();
    await this.#options.ssh.upload(script, { signal: AbortSignal.any([options.signal, this.#options.vm.died]) }).catch((err: unknown) => {
      throw this.#lostOr(err);
    });
    this.#options.recordPhase('upload', Date.now() - began);
  }

  /**
   * The warm pool's readiness probe: a no-op over the connection start
   * opened (redialled if it dropped), ended at once by the VM's death.
   */
  async probe(signal: AbortSignal): Promise<void> {
    await this.#options.ssh.probe(AbortSignal.any([signal, this.#options.vm.died])).catch((err: unknown) => {
      throw this.#lostOr(err);
    });
  }

  async run(options: RunOptions): Promise<RunResult> {
    const { ssh, vm } = this.#options;
    try {
      const result = await ssh.run({ output: options.output, signal: AbortSignal.any([options.signal, vm.died]) });
      // The connection can end a moment before the process's exit is seen: a killed-looking result waits for it.
      if (result.exitCode === null || result.exitCode > 128) await vm.endsWithin(DEATH_CHECK_MS);
      if (vm.died.aborted) throw vmLost(this.id, vm.died.reason as VmExit);
      return result;
    } catch (err) {
      if (options.signal.aborted) throw err;
      throw this.#lostOr(err);
    }
  }

  /** Close SSH, power the VM off, remove its files. Idempotent; a failed destroy may be tried again. */
  destroy(): Promise<void> {
    this.#destroyed ??= (async () => {
      await this.#options.ssh.destroy().catch((err: unknown) => {
        this.#options.logger.warn({ instance: this.id, err: errorMessage(err) }, 'closing the SSH connection failed');
      });
      await this.#options.teardown();
    })().catch((err: unknown) => {
      this.#destroyed = undefined;
      throw err;
    });
    return this.#destroyed;
  }

  /** `err`, or the VM's death when that is what broke the connection. */
  #lostOr(err: unknown): unknown {
    const { vm } = this.#options;
    return vm.died.aborted ? vmLost(this.id, vm.died.reason as VmExit) : err;
  }
}

