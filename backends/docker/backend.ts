/**
 * The `docker` backend: one container per job on a local or remote Docker
 * engine. Start picks the image, reserves cores, removes a stale container
 * left by an earlier attempt at the same job, creates and starts the
 * container (with the job's SSH key put in, in SSH mode), and hands back an
 * instance; anything half-made is removed again when a step fails or the
 * start is aborted.
 *
 * Over the usual size: as with the other backends, the start and its
 * clean-up share one attempt's state; the Engine calls are engine.ts.
 */
import {
  InstanceStartError,
  NoCapacityError,
  errorMessage,
  isMayflyError,
  SshMachine,
  generateJobKeyPair,
  CpuSetPool,
  type Backend,
  type BackendContext,
  type Instance,
  type MachineShape,
  type ManagedInstance,
  type StartAttributes,
  type StartOptions,
  type Logger,
} from '../../src/backend/kit.js';
import { DockerApi, DockerApiError } from './api.js';
import { DockerEngine, type ContainerInfo, type ContainerSpec, type ContainerSummary } from './engine.js';
import { selectImage, type ImageSettings, type SelectedImage } from './images.js';
import { DockerInstance } from './instance.js';
import { NATIVE_USER } from './native.js';
import { compileSettings, engineAddress, type CompiledSettings, type DockerSettings } from './settings.js';
import { tarFile } from './tar.js';

/** The labels every job container carries; a janitor (or a test) finds containers by them. */
export const LABELS = {
  jobId: 'travis.job_id',
  repository: 'travis.repo',
  dist: 'travis.dist',
  /** The worker that made the container (`TRAVIS_WORKER_HOSTNAME`). */
  worker: 'mayfly.worker',
  /** RFC 3339 time after which the container outlived any job it could be running: safe to delete. */
  leaseExpiresAt: 'mayfly.lease_expires_at',
} as const;

/** travis' domain name for job containers. */
const DOMAIN_NAME = 'travisci.net';
/** Where the job's public key goes in SSH mode (the image's `travis` user). */
const AUTHORIZED_KEYS_PATH = `/home/${NATIVE_USER}/.ssh/authorized_keys`;
/** Beyond the hard timeout: startup, upload and destroy of the job may take this long too. */
const LEASE_MARGIN_MS = 30 * 60_000;
/** Removing what a failed start made must not hang on an engine that does not answer. */
const DISCARD_TIMEOUT_MS = 60_000;
/** Between SSH connection attempts while the container's sshd starts (it is up within a second). */
const SSH_RETRY_SLEEP_MS = 250;
/** travis cuts each part of `owner/name` to 14 characters so that the host name stays within 64. */
const NAME_PART_LENGTH = 14;

/** travis' container and host name: `travis-job-<owner>-<repo>-<job id>`, lower case, safe characters only. */
export function containerName(attributes: Pick<StartAttributes, 'jobId' | 'repository'>): string {
  const parts = attributes.repository
    .split('/')
    .map((part) => part.replace(/[^a-zA-Z0-9-]+/g, '-').slice(0, NAME_PART_LENGTH));
  return ['travis-job', ...parts, String(attributes.jobId)].join('-').replace(/-+/g, '-').toLowerCase();
}

/** The address SSH dials: on the configured network, else the default one, else any network's. */
export function containerAddress(info: ContainerInfo, network: string): string | undefined {
  const networks = info.NetworkSettings?.Networks ?? {};
  if (network !== '') return networks[network]?.IPAddress || undefined;
  const top = info.NetworkSettings?.IPAddress;
  if (top !== undefined && top !== '') return top;
  return Object.values(networks).find((entry) => entry?.IPAddress)?.IPAddress || undefined;
}

export class DockerBackend implements Backend {
  readonly #settings: DockerSettings;
  readonly #compiled: CompiledSettings;
  readonly #context: BackendContext;
  readonly #engine: DockerEngine;
  readonly #cpusets: CpuSetPool;
  readonly #images: ImageSettings;
  /** Containers the last `listManaged` found: `destroyManaged` removes only these. */
  #managed = new Set<string>();

  /** Takes settings that passed `validateSettings` (the loader's `validate` hook). */
  constructor(settings: DockerSettings, context: BackendContext) {
    this.#settings = settings;
    this.#context = context;
    this.#compiled = compileSettings(settings);
    this.#engine = new DockerEngine(
      new DockerApi({
        address: engineAddress(settings),
        certPath: settings.certPath,
        tlsVerify: settings.tlsVerify,
        apiVersion: settings.apiVersion,
        metrics: context.metrics,
        logger: context.logger,
      }),
    );
    this.#cpusets = new CpuSetPool(this.#compiled.cpuSetSize);
    this.#images = { selector: settings.imageSelectorType === 'env' ? 'env' : 'tag', images: settings.images, pull: settings.pull };
  }

  /** The engine client, for tests and tooling that look at what the backend made. */
  get engine(): DockerEngine {
    return this.#engine;
  }

  /** Cores not reserved by a running job. */
  get freeCores(): number {
    return this.#cpusets.free;
  }

  /**
   * The container `start` would make differs between jobs only by its image:
   * the one chosen now, named with the id the engine has for it, so a tag
   * moved to a new image is a new shape. Pulls a missing image when `PULL`
   * is set, as `start` would.
   */
  async shape(attributes: StartAttributes, signal: AbortSignal): Promise<MachineShape> {
    const image = await this.#selectImage(attributes, () => {}, signal);
    const id = image.ref === image.name ? ((await this.#engine.imageId(image.name, signal)) ?? image.ref) : image.ref;
    return { key: `image=${image.name} id=${id.replace(/^sha256:/, '').slice(0, 12)}`, image: image.name };
  }

  async start(attributes: StartAttributes, options: StartOptions): Promise<Instance> {
    const { signal, progress, recordPhase } = options;
    signal.throwIfAborted();
    const began = Date.now();
    const settings = this.#settings;
    const name = containerName(attributes);
    const logger = options.logger.child({ container: name });
    const image = await this.#selectImage(attributes, progress, signal);

    let cpuset = '';
    if (settings.cpus > 0) {
      const reserved = this.#cpusets.checkout(settings.cpus);
      if (reserved === undefined) {
        throw new NoCapacityError(
          `no ${settings.cpus} free cores for another container (${this.#cpusets.free} of ${this.#cpusets.size} free)`,
        );
      }
      cpuset = reserved;
    }
    let containerId: string | undefined;
    try {
      if (await this.#engine.removeContainer(name, signal)) {
        logger.warn('removed a stale container of the same name before creating this one');
      }
      progress(`Creating container ${name} from image ${image.name}`);
      const createStarted = Date.now();
      containerId = await this.#engine.createContainer(name, this.#spec(attributes, image, name, cpuset), signal);
      recordPhase('create', Date.now() - createStarted);

      const key = settings.native ? undefined : generateJobKeyPair();
      if (key !== undefined) {
        // Into the container's filesystem only: the private key never touches the worker's disk.
        const authorizedKeys = tarFile({ name: AUTHORIZED_KEYS_PATH, data: Buffer.from(`${key.publicKey}\n`), mode: 0o644 });
        await this.#engine.putArchive(containerId, '/', authorizedKeys, signal);
      }

      progress(`Starting container ${name}`);
      const startStarted = Date.now();
      await this.#engine.startContainer(containerId, signal);
      const info = await this.#engine.inspectContainer(containerId, signal);
      if (info === undefined || !info.State.Running) throw notRunning(name, info);
      const running = Date.now();
      recordPhase('running', running - startStarted);
      const instance = this.#instance(containerId, image, info, key?.privateKey, cpuset, running - began, options, logger);
      return instance;
    } catch (err) {
      await this.#discard(containerId ?? name, logger);
      this.#cpusets.checkin(cpuset);
      if (signal.aborted) throw signal.reason;
      throw startError(err, name, image);
    }
  }

  async close(): Promise<void> {
    await this.#engine.api.close();
  }

  /** Every container on the engine with mayfly's labels (worker and lease), any worker's, running or not. */
  async listManaged(signal: AbortSignal): Promise<ManagedInstance[]> {
    const found = (await this.#engine.listContainers([LABELS.worker, LABELS.leaseExpiresAt], signal))
      .map(managedContainer)
      .filter((instance) => instance !== undefined);
    this.#managed = new Set(found.map((instance) => instance.id));
    return found;
  }

  /** Remove a container the last `listManaged` returned (and only such a container). */
  async destroyManaged(id: string, signal: AbortSignal): Promise<void> {
    if (!this.#managed.has(id)) throw new Error(`container ${id} was not listed as one of mayfly's: not removing it`);
    await this.#engine.removeContainer(id, signal);
    this.#managed.delete(id);
  }

  async #selectImage(attributes: StartAttributes, progress: (line: string) => void, signal: AbortSignal): Promise<SelectedImage> {
    try {
      return await selectImage(this.#engine, attributes, this.#images, progress, signal);
    } catch (err) {
      if (signal.aborted) throw signal.reason;
      if (isMayflyError(err)) throw err;
      throw new InstanceStartError(`could not choose an image: ${errorMessage(err)}`, { cause: err });
    }
  }

  #spec(attributes: StartAttributes, image: SelectedImage, name: string, cpuset: string): ContainerSpec {
    const settings = this.#settings;
    const compiled = this.#compiled;
    return {
      Image: image.ref,
      Cmd: compiled.cmd,
      Hostname: name,
      Domainname: DOMAIN_NAME,
      Labels: {
        ...compiled.labels,
        [LABELS.dist]: attributes.dist,
        [LABELS.repository]: attributes.repository,
        [LABELS.jobId]: String(attributes.jobId),
        [LABELS.worker]: this.#context.hostname,
        [LABELS.leaseExpiresAt]: new Date(Date.now() + attributes.hardTimeoutMs + LEASE_MARGIN_MS).toISOString(),
      },
      HostConfig: {
        Binds: compiled.binds,
        Privileged: settings.privileged,
        Tmpfs: compiled.tmpfs,
        ...(compiled.securityOpt.length > 0 ? { SecurityOpt: compiled.securityOpt } : {}),
        ...(compiled.shmBytes > 0 ? { ShmSize: compiled.shmBytes } : {}),
        ...(compiled.memoryBytes > 0 ? { Memory: compiled.memoryBytes } : {}),
        ...(cpuset !== '' ? { CpusetCpus: cpuset } : {}),
        ...(settings.network !== '' ? { NetworkMode: settings.network } : {}),
      },
    };
  }

  #instance(
    containerId: string,
    image: SelectedImage,
    info: ContainerInfo,
    privateKey: string | undefined,
    cpuset: string,
    startupMs: number,
    options: StartOptions,
    logger: Logger,
  ): DockerInstance {
    const settings = this.#settings;
    let ssh: SshMachine | undefined;
    if (privateKey !== undefined) {
      const ipStarted = Date.now();
      const address = containerAddress(info, settings.network);
      if (address === undefined) {
        throw new InstanceStartError(
          `container ${info.Name} has no IP address${settings.network === '' ? '' : ` on network ${settings.network}`}: SSH can't reach it (join it to a network with TRAVIS_WORKER_DOCKER_NETWORK, or use TRAVIS_WORKER_DOCKER_NATIVE=true)`,
        );
      }
      options.recordPhase('ip', Date.now() - ipStarted);
      ssh = new SshMachine({
        id: containerId.slice(0, 12),
        imageName: image.name,
        startupMs,
        target: { host: address, port: 22, username: NATIVE_USER, privateKey },
        dialTimeoutMs: settings.sshDialTimeout,
        retrySleepMs: SSH_RETRY_SLEEP_MS,
        runCommand: this.#compiled.execCmd.join(' '),
        logger,
      });
    }
    return new DockerInstance({
      engine: this.#engine,
      containerId,
      imageName: image.name,
      startupMs,
      ssh,
      native: {
        execCmd: this.#compiled.execCmd,
        tty: settings.nativeTty,
        env: this.#compiled.proxyEnv,
        inspectIntervalMs: settings.inspectInterval,
      },
      stopTimeoutMs: settings.stopTimeout,
      recordPhase: options.recordPhase,
      release: () => this.#cpusets.checkin(cpuset),
      logger,
    });
  }

  /** Remove what a failed start made; never throws (the error that matters is the start's). */
  async #discard(idOrName: string, logger: Logger): Promise<void> {
    try {
      await this.#engine.removeContainer(idOrName, AbortSignal.timeout(DISCARD_TIMEOUT_MS));
    } catch (err) {
      logger.error({ container: idOrName, err: errorMessage(err) }, 'could not remove the container of a failed start: remove it by hand');
    }
  }
}

/** A listed container as a managed instance (its id as `Instance.id` has it), or undefined without mayfly's labels. */
function managedContainer(container: ContainerSummary): ManagedInstance | undefined {
  const labels = container.Labels ?? {};
  const worker = labels[LABELS.worker];
  const lease = labels[LABELS.leaseExpiresAt];
  if (worker === undefined || lease === undefined) return undefined;
  const instance: ManagedInstance = { id: container.Id.slice(0, 12), worker };
  const jobId = labels[LABELS.jobId];
  if (jobId !== undefined && /^\d+$/.test(jobId)) instance.jobId = Number(jobId);
  const expires = Date.parse(lease);
  if (!Number.isNaN(expires)) instance.leaseExpiresAt = new Date(expires);
  if (container.Created !== undefined) instance.createdAt = new Date(container.Created * 1000);
  return instance;
}

function notRunning(name: string, info: ContainerInfo | undefined): InstanceStartError {
  if (info === undefined) return new InstanceStartError(`container ${name} vanished right after it was started`);
  const { Status, ExitCode, Error: error } = info.State;
  return new InstanceStartError(
    `container ${name} is ${Status} right after it was started (exit code ${ExitCode}${error ? `, ${error}` : ''}): check the image's CMD (TRAVIS_WORKER_DOCKER_CMD)`,
  );
}

/** A failed start as the error the job pipeline acts on: always one that requeues, saying what failed. */
function startError(err: unknown, name: string, image: SelectedImage): unknown {
  if (isMayflyError(err)) return err;
  if (err instanceof DockerApiError && err.operation === 'containers.create' && err.status === 404) {
    // The image was there when it was chosen; it was removed since (or the engine lost it).
    return new InstanceStartError(`image ${image.name} does not exist on the Docker engine: ${err.engineMessage}`, {
      cause: err,
      userMessage: `The Docker image "${image.name}" is not available on this worker's Docker host; the job will be run again.`,
    });
  }
  return new InstanceStartError(`could not start container ${name}: ${errorMessage(err)}`, { cause: err });
}
