/**
 * The one contract every backend implements (gce, ec2, docker, ssh, local,
 * fake). The job pipeline only ever talks to these interfaces; backends
 * import it, with the helpers they may use, through the kit (kit.ts),
 * never the other way round.
 *
 * Lifecycle of one job on a backend:
 *   backend.start(attrs, opts)    -> Instance (the machine exists and has an address)
 *   instance.upload(script, opts) -> waits for the machine to accept it, writes it
 *   instance.run(opts)            -> runs it, streaming output, to its exit
 *   instance.destroy()            -> always, on every path; idempotent
 */
import type { Writable } from 'node:stream';
import type { Logger } from '../logger.js';
import type { SettingsSchema } from '../config/formats.js';

/** What a job asks of its machine, derived from the payload and the worker's defaults. */
export interface StartAttributes {
  jobId: number;
  /** Repository slug, `owner/name`; for labels and logs. */
  repository: string;
  language: string;
  dist: string;
  arch: string;
  group: string;
  os: string;
  osxImage?: string;
  /** An explicit image the job asked for (`config.image_name`). */
  imageName?: string;
  /** `default` or `premium`. */
  vmType: string;
  /** e.g. `medium`, `large`, `gpu-medium`; empty when the job did not ask. */
  vmSize?: string;
  vmConfig: { gpuCount?: number; gpuType?: string; zone?: string };
  /** The job's hard limit in milliseconds: backends use it for leases and self-destruct timers. */
  hardTimeoutMs: number;
  warmer: boolean;
}

/**
 * The steps of bringing an instance up, timed for metrics: the create call
 * returned, the instance runs, its address is known, SSH accepts, the script
 * is uploaded.
 */
export type BootPhase = 'create' | 'running' | 'ip' | 'ssh-ready' | 'upload';

export interface StartOptions {
  /** Aborts on startup timeout, cancel and shutdown: stop booting and release what was made. */
  signal: AbortSignal;
  /** A line for the job's log saying what the backend is doing (user-facing). */
  progress: (line: string) => void;
  /** A logger already carrying the job id, processor and backend. */
  logger: Logger;
  /** Report how long a boot phase took, in milliseconds (also from the instance, later, for `ssh-ready` and `upload`). */
  recordPhase: (phase: BootPhase, durationMs: number) => void;
}

export interface UploadOptions {
  /** Aborts on the upload timeout, cancel and shutdown. */
  signal: AbortSignal;
}

export interface RunOptions {
  /** Script output (stdout and stderr as one stream) goes here; honour its backpressure. */
  output: Writable;
  /** Aborts on hard timeout, log silence, max log length, cancel and shutdown: stop the script at once. */
  signal: AbortSignal;
}

/** How the script ended. */
export interface RunResult {
  /** The exit status, or null when the script was killed by a signal. */
  exitCode: number | null;
  /** The signal that killed the script, if any (e.g. `KILL`). */
  signal?: string;
}

export interface Instance {
  /** The backend's id for it (cloud instance name, host name, container id, directory). */
  readonly id: string;
  /** The image it was booted from, for the worker-info fold. */
  readonly imageName: string;
  /** How long `start` took, in milliseconds. */
  readonly startupMs: number;
  /**
   * The `vm_size` state updates report once the job has started, as travis'
   * cloud backends rewrite it: the machine or instance type the job's size
   * mapped to, or `premium`. Undefined: the payload's own `vm_size`.
   */
  readonly vmSize?: string | undefined;
  /**
   * Put the build script on the instance, waiting for it to accept connections.
   * Throws `StaleVmError` when a script is already there, `UploadError`,
   * `SshUnreachableError` or `UploadTimeoutError` otherwise.
   */
  upload(script: Buffer, options: UploadOptions): Promise<void>;
  /**
   * Run the uploaded script under a terminal and resolve when it has exited
   * and every byte of its output has been processed by `output` (see
   * `outputFlushed`). Throws `ConnectionLostError` when the outcome can't be
   * known. When `signal` aborts, stops the script and settles promptly
   * (either way).
   */
  run(options: RunOptions): Promise<RunResult>;
  /**
   * Optional (backends whose machines answer SSH): wait until the machine
   * accepts a connection and runs a no-op command, keeping that connection
   * for `upload`. The warm pool (src/warm-pool/) probes an instance with it
   * before offering it to jobs; throws like `upload` when the machine does
   * not answer, or when the command fails.
   */
  probe?(signal: AbortSignal): Promise<void>;
  /** Release everything the instance holds. Idempotent; safe after a failed start or upload. */
  destroy(): Promise<void>;
}

/**
 * What machine a job's start attributes map to on one backend, resolved the
 * way `start` resolves them. Two jobs whose shapes have the same `key` get
 * interchangeable machines, so a machine booted ahead for one can run the
 * other (the warm pool, src/warm-pool/).
 */
export interface MachineShape {
  /**
   * Everything that decides the machine, the resolved image included, as
   * one short readable text (e.g. `image=travis-ci-focal-123 machine=n2-standard-2`):
   * equal keys, interchangeable machines. It labels metrics and `/worker`, so
   * it never holds a secret.
   */
  key: string;
  /** The image the machine would boot from now. */
  image: string;
}

/**
 * An instance a backend made, as its labels/tags describe it: what the
 * orphan reaper (src/reaper/) reads to decide whether it may go.
 */
export interface ManagedInstance {
  /** The backend's id for it, the same as `Instance.id` of the job that made it, and what `destroyManaged` takes. */
  id: string;
  /** The job it was made for (its job-id label). */
  jobId?: number;
  /** The host name of the worker that made it (`TRAVIS_WORKER_HOSTNAME`, as `BackendContext.hostname` spells it). */
  worker?: string;
  /** After this the instance has outlived any job it could be running (its lease label). */
  leaseExpiresAt?: Date;
  /** When the cloud (or engine) created it. */
  createdAt?: Date;
}

export interface Backend {
  /**
   * Make a machine for one job. Resolves once it exists and can be reached
   * (an address is known). Throws a requeueing `MayflyError` on failure; if
   * `signal` aborts, rejects after releasing anything half-made.
   */
  start(attributes: StartAttributes, options: StartOptions): Promise<Instance>;
  /**
   * Optional: what the backend must learn or check before it can take a job
   * and that needs the network (its credentials' scopes, where its machines
   * go). Called once at startup, before the first job; a rejection stops
   * the worker with its message, instead of failing every job.
   */
  ready?(signal: AbortSignal): Promise<void>;
  /**
   * Optional (backends that can boot machines ahead of jobs): the shape of
   * the machine `start` would make for `attributes`, resolved the same way
   * (image lookups included) but making nothing. Throws what `start` would
   * throw for attributes it cannot serve.
   */
  shape?(attributes: StartAttributes, signal: AbortSignal): Promise<MachineShape>;
  /** Release backend-wide resources (clients, pools) at worker shutdown. */
  close(): Promise<void>;
  /**
   * Optional (backends that make machines that can outlive the worker):
   * every instance carrying this backend's own mayfly labels, made by any
   * worker, never anything else. Calls are rate limited like every other.
   */
  listManaged?(signal: AbortSignal): Promise<ManagedInstance[]>;
  /** Destroy one instance `listManaged` returned; resolves when it is gone (or was gone already). */
  destroyManaged?(id: string, signal: AbortSignal): Promise<void>;
}

/** How one call to a backend's API ended, for metrics. */
export type ApiCallOutcome = 'ok' | 'throttled' | 'error';

/** What backends report to the worker's metrics (besides boot phases, see `StartOptions.recordPhase`). */
export interface BackendMetrics {
  /** One call to the backend's API (e.g. `instances.insert`), its outcome and duration in ms. */
  apiCall(operation: string, outcome: ApiCallOutcome, durationMs: number): void;
}

export interface BackendContext {
  logger: Logger;
  /** This worker's host name (`TRAVIS_WORKER_HOSTNAME`), for labels. */
  hostname: string;
  metrics: BackendMetrics;
}

/**
 * A family of settings whose names end in a free-form part, such as
 * travis' `TRAVIS_WORKER_GCE_IMAGE_<LANGUAGE>`. Every variable
 * `TRAVIS_WORKER_<BACKEND>_<PREFIX>_<NAME>` that is not a declared setting
 * lands in `settings[<family key>][<name, lower case>]` as text.
 */
export interface SettingFamily {
  /** The part after the backend name, upper snake case, e.g. `IMAGE`. */
  prefix: string;
  doc: string;
  sensitive?: boolean;
}

/**
 * One thing wrong with a backend's settings. The loader names the variable,
 * so `problem` reads on from it (`"x" is not a user name`) and never quotes
 * a secret.
 */
export interface SettingProblem {
  /** The setting's key in the schema (or a family's key), e.g. `userData`. */
  setting: string;
  problem: string;
}

/**
 * What each folder under `backends/` exports. Its settings are read from
 * `TRAVIS_WORKER_<NAME>_<KEY>` (name upper-cased), declared in `settings`.
 */
export interface BackendDefinition<Settings = Record<string, unknown>, Families extends keyof Settings & string = never> {
  /** `TRAVIS_WORKER_PROVIDER_NAME` value, lower case. */
  name: string;
  /** One line for `--list-backend-providers`. */
  description: string;
  /** The declared settings; the families' properties are filled by the loader. */
  settings: SettingsSchema<Omit<Settings, Families>>;
  /** Free-form setting families, keyed by the property of `Settings` that receives them (a `Record<string, string>`). */
  settingFamilies?: Record<Families, SettingFamily>;
  /**
   * Every problem the schema alone can't see (text the backend parses,
   * settings that go together, files they name), each keyed by its setting.
   * The loader calls it while loading, before anything connects, and reports
   * these with every other bad variable in one error; `create` is only ever
   * handed settings that passed.
   */
  validate?(settings: Settings): SettingProblem[];
  create(settings: Settings, context: BackendContext): Backend;
}
