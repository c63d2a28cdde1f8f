/**
 * One job's EC2 instance once it runs: SSH (through `SshMachine`) with the
 * job's in-memory key, boot phases timed for metrics, a watch on the
 * instance's state while the script runs (a spot interruption or a stop by
 * AWS requeues the job), and termination on destroy.
 */
import {
  CloudCallError,
  ConnectionLostError,
  errorMessage,
  abortableSleep,
  type BootPhase,
  type Instance,
  type RunOptions,
  type RunResult,
  type UploadOptions,
  type Logger,
  type SshMachine,
} from '../../src/backend/kit.js';
import type { Ec2Api } from './api.js';

/** The state reason EC2 gives an instance it took back from the spot market. */
const SPOT_TERMINATION = 'Server.SpotInstanceTermination';
/** A state check after a dropped connection must not hold the job's end for long. */
const LOST_CHECK_TIMEOUT_MS = 10_000;

export interface Ec2InstanceOptions {
  /** SSH to the instance; its `destroy` only closes the connection. */
  ssh: SshMachine;
  /** `Instance.vmSize`: what travis reports as the job's `vm_size`. */
  vmSize?: string | undefined;
  api: Ec2Api;
  /** Terminates the instance (and makes sure it is going); may throw, and is then tried again by the next `destroy`. */
  terminate: () => Promise<void>;
  /** SSH connection attempts for the upload. */
  uploadRetries: number;
  /** How often the state is checked while the script runs, in ms; 0 = never. */
  interruptionPollMs: number;
  recordPhase: (phase: BootPhase, durationMs: number) => void;
  logger: Logger;
}

/** Why AWS took the instance away, in words for the job log. */
function interruption(state: string, reasonCode: string | undefined, reasonMessage: string | undefined, cause?: unknown): ConnectionLostError {
  const spot = reasonCode === SPOT_TERMINATION;
  return new ConnectionLostError(
    `instance is ${state}${reasonCode ? ` (${reasonCode}: ${reasonMessage ?? ''})` : ''} while the job ran`,
    {
      cause,
      userMessage: spot
        ? 'The spot instance running this job was interrupted by AWS; the job will be run again.'
        : `The instance running this job was ${state} by AWS; the job will be run again.`,
    },
  );
}

export class Ec2Instance implements Instance {
  readonly id: string;
  readonly imageName: string;
  readonly startupMs: number;
  readonly vmSize: string | undefined;
  readonly #options: Ec2InstanceOptions;
  #destroyed: Promise<void> | undefined;

  constructor(options: Ec2InstanceOptions) {
    this.#options = options;
    this.id = options.ssh.id;
    this.imageName = options.ssh.imageName;
    this.startupMs = options.ssh.startupMs;
    this.vmSize = options.vmSize;
  }

  async upload(script: Buffer, options: UploadOptions): Promise<void> {
    const { ssh, uploadRetries, recordPhase } = this.#options;
    await ssh.timedUpload(script, { signal: options.signal, maxAttempts: uploadRetries }, recordPhase);
  }

  /** Wait for SSH and run a no-op there (the warm pool's readiness probe); the connection stays for `upload`. */
  probe(signal: AbortSignal): Promise<void> {
    return this.#options.ssh.probe(signal, this.#options.uploadRetries);
  }

  async run(options: RunOptions): Promise<RunResult> {
    const watchStop = new AbortController();
    const taken = new AbortController();
    const watching = this.#watch(taken, AbortSignal.any([watchStop.signal, options.signal]));
    try {
      return await this.#options.ssh.run({ output: options.output, signal: AbortSignal.any([options.signal, taken.signal]) });
    } catch (err) {
      if (options.signal.aborted) throw err;
      if (taken.signal.aborted) throw taken.signal.reason;
      if (err instanceof ConnectionLostError) throw (await this.#takenAway(err)) ?? err;
      throw err;
    } finally {
      watchStop.abort();
      await watching;
    }
  }

  /** Close SSH, then terminate. Concurrent calls share one try; a failed try is made again by the next call. */
  destroy(): Promise<void> {
    this.#destroyed ??= (async () => {
      await this.#options.ssh.destroy();
      await this.#options.terminate();
    })().catch((err: unknown) => {
      this.#destroyed = undefined;
      throw err;
    });
    return this.#destroyed;
  }

  /** Until `signal` aborts: check the state every poll, and abort `taken` once AWS has taken the instance. */
  async #watch(taken: AbortController, signal: AbortSignal): Promise<void> {
    const { api, interruptionPollMs, logger } = this.#options;
    if (interruptionPollMs <= 0) return;
    try {
      for (;;) {
        await abortableSleep(interruptionPollMs, signal);
        try {
          const [found] = await api.describeInstances({ ids: [this.id] }, signal);
          const state = found?.State?.Name ?? 'terminated';
          if (state !== 'running') {
            logger.warn({ instance: this.id, state, reason: found?.StateReason?.Code }, 'instance taken away while the job ran');
            taken.abort(interruption(state, found?.StateReason?.Code, found?.StateReason?.Message));
            return;
          }
        } catch (err) {
          if (signal.aborted) return;
          if (err instanceof CloudCallError && err.kind === 'not-found') {
            taken.abort(interruption('terminated', undefined, undefined, err));
            return;
          }
          logger.warn({ instance: this.id, err: errorMessage(err) }, 'could not check the instance state; trying again later');
        }
      }
    } catch {
      // Aborted: the run is over.
    }
  }

  /** After a dropped connection: if AWS took the instance, the error that says so. */
  async #takenAway(lost: ConnectionLostError): Promise<ConnectionLostError | undefined> {
    try {
      const [found] = await this.#options.api.describeInstances({ ids: [this.id] }, AbortSignal.timeout(LOST_CHECK_TIMEOUT_MS));
      const state = found?.State?.Name ?? 'terminated';
      return state === 'running' ? undefined : interruption(state, found?.StateReason?.Code, found?.StateReason?.Message, lost);
    } catch {
      return undefined;
    }
  }
}
