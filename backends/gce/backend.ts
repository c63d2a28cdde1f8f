/**
 * The `gce` backend: a fresh Compute Engine VM per job, booted in the
 * first zone with room, reached over SSH with a key made for the job, and
 * deleted on every path (including a start that is aborted mid-way).
 *
 * Over the usual size: the start (zones, insert, boot wait, SSH) and its
 * clean-up on every failure share the state of one attempt; the calls,
 * answers, spec, network and images live in their own modules.
 */
import {
  raceAbort,
  CloudCallError,
  MalformedAnswerError,
  InstanceStartError,
  NoCapacityError,
  errorMessage,
  isMayflyError,
  SshMachine,
  generateJobKeyPair,
  abortableSleep,
  growingDelays,
  type CloudErrorKind,
  type Backend,
  type BackendContext,
  type Instance,
  type MachineShape,
  type ManagedInstance,
  type StartAttributes,
  type StartOptions,
  type Logger,
} from '../../src/backend/kit.js';
import { GceApi, type GceImage, type GceInstanceResource, type GceOperation } from './api.js';
import { authClientFor } from './auth.js';
import { GceOperationError, classifyGceError, needsSubnetwork, notOfferedInZone } from './errors.js';
import { ImageResolver, imagePattern } from './images.js';
import { GceInstance } from './instance.js';
import { instanceName, instanceSpec, regionOf } from './instance-spec.js';
import { machineFor, type Machine } from './machine.js';
import { MANAGED_FILTER, managedInstance } from './managed.js';
import { metadataHostOf, resolvePlacement, type GcePlacement } from './metadata.js';
import { checkVmScopes, usesVmCredentials } from './scopes.js';
import { WarmerError, requestWarmedInstance, type WarmedInstance } from './warmer.js';
import type { GceSettings } from './settings.js';

/** Job VMs listen for SSH where every image does. */
const SSH_PORT = 22;
/** Attempts to delete a VM that is still there after a delete reported done (a lost delete). */
export const DELETE_ATTEMPTS = 3;
/** A deletion (all attempts) gives up after this, in ms; the VM's lease label and auto-implode remain. */
const DELETE_DEADLINE_MS = 5 * 60_000;
/** First pause between status checks of a VM whose insert is DONE but which is not RUNNING yet, in ms; they double up to BOOT_POLL_SLEEP. */
const STATUS_POLL_FIRST_MS = 100;
/** Asking whether a VM was preempted, in ms. */
const PREEMPTION_CHECK_MS = 30_000;
/** Instance states of a VM that no longer runs (preempted, stopped by someone). */
const STOPPED_STATES = new Set(['STOPPING', 'STOPPED', 'TERMINATED', 'SUSPENDING', 'SUSPENDED']);

const seconds = (ms: number): string => `${(ms / 1000).toFixed(1)}s`;
const kindOf = (err: unknown): CloudErrorKind => (err instanceof CloudCallError ? err.kind : classifyGceError(err));
const isGone = (err: unknown): boolean => kindOf(err) === 'not-found';


/** The operation's errors as an exception, if it finished with any. */
function operationFailure(operation: GceOperation): GceOperationError | undefined {
  const errors = operation.error?.errors ?? [];
  if (errors.length === 0) return undefined;
  return new GceOperationError(
    operation.name,
    errors.map((e) => String(e.code ?? '')),
    errors.map((e) => `${e.code ?? 'UNKNOWN'}: ${e.message ?? ''}`).join('; '),
  );
}

/** The address SSH is reached on: the external one when asked and present, else the internal one. */
export function addressOf(instance: GceInstanceResource, usePublic: boolean): string | undefined {
  const interfaces = instance.networkInterfaces ?? [];
  if (usePublic) {
    for (const nic of interfaces) {
      for (const access of nic.accessConfigs ?? []) if (access.natIP) return access.natIP;
    }
  }
  return interfaces.find((nic) => nic.networkIP)?.networkIP ?? undefined;
}

/** Where one start sent an insert: the zone, and the SDK promises of the attempts on the wire. */
interface InsertSent {
  zone: string;
  attempts: Promise<unknown>[];
}

export class GceBackend implements Backend {
  readonly #settings: GceSettings;
  readonly #context: BackendContext;
  readonly #api: GceApi;
  readonly #images: ImageResolver;
  readonly #closing = new AbortController();
  #placement: Promise<GcePlacement> | undefined;
  #project = '';
  /** Round-robin start zone, so load spreads over ZONES while each start still tries them all. */
  #nextZone = 0;
  /** Zone of each VM the last `listManaged` found: `destroyManaged` deletes only these. */
  readonly #managedZones = new Map<string, string>();

  /** Takes settings that passed `validateSettings` (the loader's `validate` hook). */
  constructor(settings: GceSettings, context: BackendContext) {
    this.#settings = settings;
    this.#context = context;
    this.#api = new GceApi({
      endpoint: settings.apiEndpoint,
      authClient: authClientFor(settings.accountJson),
      maxCalls: settings.rateLimitMaxCalls,
      intervalMs: settings.rateLimitDuration,
      metrics: context.metrics,
      logger: context.logger,
    });
    if (settings.gpuCount > 0) {
      context.logger.warn(
        { gpu_count: settings.gpuCount },
        'TRAVIS_WORKER_GCE_GPU_COUNT has no effect: as in travis-ci/worker, a VM gets GPUs only when its job asks (vm_size gpu-medium or gpu-xlarge, or vm_config.gpu_count)',
      );
    }
    this.#images = new ImageResolver(this.#api, () => this.#imageProject());
  }

  /** Settles the placement at startup: a worker without a project, scopes or a usable network stops there, not at its first job. */
  async ready(signal: AbortSignal): Promise<void> {
    await raceAbort(this.placement(), signal);
  }

  /**
   * Project, zones and network, settled once (the metadata server is asked
   * at most once), after checking the scopes of the VM's own credentials
   * when the worker uses them. Throws `ConfigError` saying what to set.
   */
  placement(): Promise<GcePlacement> {
    this.#placement ??= this.#settlePlacement();
    return this.#placement;
  }

  async #settlePlacement(): Promise<GcePlacement> {
    const settings = this.#settings;
    const signal = this.#closing.signal;
    if (usesVmCredentials(settings.accountJson)) await checkVmScopes(metadataHostOf(settings.metadataHost), signal);
    const placement = await resolvePlacement(settings, this.#context.logger, signal, (project, zone, name) =>
      this.#api.getInstance(project, zone, name, signal),
    );
    this.#project = placement.projectId;
    return placement;
  }

  #imageProject(): string {
    return this.#settings.imageProjectId.trim() || this.#project;
  }

  #zoneOrder(zones: readonly string[]): string[] {
    const first = this.#nextZone++ % zones.length;
    return [...zones.slice(first), ...zones.slice(0, first)];
  }

  /** The VM `start` would boot: image (as resolved now), machine type, GPUs, disk, a pinned zone (`*`: any). */
  async shape(attributes: StartAttributes, signal: AbortSignal): Promise<MachineShape> {
    await raceAbort(this.placement(), signal);
    const { image, machine } = await this.#machine(attributes, signal);
    const gpu = machine.gpu === undefined ? 'none' : `${machine.gpu.count}x${machine.gpu.type}`;
    const zone = attributes.vmConfig.zone?.trim() || '*';
    const name = String(image.name);
    return {
      key: `image=${name} machine=${machine.machineType} gpu=${gpu} disk=${machine.diskSizeGb} zone=${zone} vm_size=${machine.reportedVmSize ?? '-'}`,
      image: name,
    };
  }

  /** The image (as resolved now) and machine a job's VM gets: what `start` boots and `shape` reports. */
  async #machine(attributes: StartAttributes, signal: AbortSignal): Promise<{ image: GceImage; machine: Machine }> {
    const settings = this.#settings;
    const image = await this.#images.resolve(imagePattern(attributes, settings.images, settings.imageDefault), signal);
    return { image, machine: machineFor(attributes, settings) };
  }

  async start(attributes: StartAttributes, options: StartOptions): Promise<Instance> {
    const began = Date.now();
    const { signal, progress, recordPhase } = options;
    signal.throwIfAborted();
    const settings = this.#settings;
    const placement = await raceAbort(this.placement(), signal);
    const name = instanceName();
    let image: GceImage;
    let machine: Machine;
    try {
      ({ image, machine } = await this.#machine(attributes, signal));
    } catch (err) {
      if (signal.aborted) throw err;
      throw this.#startError(name, err);
    }
    progress(`Using image ${image.name}`);

    const pinned = attributes.vmConfig.zone?.trim();
    const zones = pinned ? [pinned] : this.#zoneOrder(placement.zones);
    if (attributes.warmer && settings.warmerUrl.trim() !== '') {
      const warmed = await this.#fromWarmer(zones[0] as string, image, machine.machineType, options);
      if (warmed) return this.#instance(warmed, image, machine.reportedVmSize, began, options, options.logger.child({ instance: warmed.name }));
    }
    const logger = options.logger.child({ instance: name });
    const keys = generateJobKeyPair();
    const sent: InsertSent[] = [];
    try {
      const failures: string[] = [];
      /** Zones that do not offer the machine or GPU type at all. */
      let notOffered = 0;
      let zone: string | undefined;
      let inserted = 0;
      for (const [index, candidate] of zones.entries()) {
        progress(`Starting instance ${name} in ${candidate}`);
        const insert: InsertSent = { zone: candidate, attempts: [] };
        sent.push(insert);
        const calling = Date.now();
        try {
          const spec = instanceSpec({
            name,
            zone: candidate,
            projectId: placement.projectId,
            network: placement.network.network,
            subnetwork: placement.network.subnetworkFor(regionOf(candidate)),
            machine,
            sourceImage: String(image.selfLink),
            attributes,
            workerHost: this.#context.hostname,
            sshUser: settings.sshUser,
            publicKey: keys.publicKey,
            site: settings.travisSite,
            preemptible: settings.preemptible,
            publicIp: settings.publicIp,
            autoImplode: settings.autoImplode,
            now: Date.now(),
          });
          const operation = await this.#api.insertInstance(placement.projectId, candidate, spec, signal, (attempt) => {
            insert.attempts.push(attempt);
          });
          inserted = Date.now();
          recordPhase('create', inserted - calling);
          const done = await this.#awaitOperation(candidate, operation, signal);
          const failure = operationFailure(done);
          if (failure) throw failure;
          zone = candidate;
          break;
        } catch (err) {
          if (signal.aborted) throw err;
          const kind = kindOf(err);
          const lacking = notOfferedInZone(err);
          if (kind !== 'quota' && kind !== 'capacity' && !lacking) throw err;
          if (lacking) notOffered += 1;
          const what = lacking ? 'such machine' : kind === 'quota' ? 'quota' : 'capacity';
          failures.push(`${candidate}: no ${what} (${errorMessage(err)})`);
          logger.warn({ zone: candidate, kind, err: errorMessage(err) }, 'zone refused the instance');
          const next = zones[index + 1];
          progress(next === undefined ? `No ${what} in ${candidate}` : `No ${what} in ${candidate}; trying ${next}`);
        }
      }
      if (zone === undefined && notOffered === zones.length) {
        // No zone offers it: a setting or the job's vm_size/vm_config asks for what this region lacks.
        throw new InstanceStartError(`no zone offers the machine of instance ${name}: ${failures.join('; ')}`, {
          userMessage: 'No GCE zone of this worker offers the machine type or GPU this job asks for.',
        });
      }
      if (zone === undefined) {
        throw new NoCapacityError(`no zone could take instance ${name}: ${failures.join('; ')}`, {
          userMessage: `No GCE zone had ${failures.some((f) => f.includes('no quota')) ? 'quota' : 'capacity'} for the build VM; the job will be run again.`,
        });
      }

      const { instance, runningAt } = await this.#awaitRunning(zone, name, signal);
      recordPhase('running', runningAt - inserted);
      progress(`instance running after ${seconds(runningAt - began)}`);
      const address = addressOf(instance, settings.publicIp && settings.publicIpConnect);
      // GCE gives a VM its internal IP when it creates it: a RUNNING one without any is a wrong answer, not one to wait out.
      if (address === undefined) {
        throw new MalformedAnswerError('wrong-shape', `instances.get answered that instance ${name} is RUNNING but has no IP address`);
      }
      recordPhase('ip', Date.now() - runningAt);
      logger.info({ zone, address, image: image.name }, 'instance running');
      return this.#instance({ name, zone, address, privateKey: keys.privateKey }, image, machine.reportedVmSize, began, options, logger);
    } catch (err) {
      // Nothing half-made stays: wait for inserts still on the wire, then delete in every zone tried.
      await Promise.allSettled(sent.flatMap((insert) => insert.attempts));
      await this.#deleteEverywhere(
        name,
        sent.map((insert) => insert.zone),
        logger,
      ).catch((deleteErr: unknown) => logger.error({ err: errorMessage(deleteErr) }, 'could not delete a half-started instance'));
      if (signal.aborted) throw signal.reason;
      throw this.#startError(name, err);
    }
  }

  /** The job's instance: a VM at `vm.address`, reached over SSH with `vm.privateKey`. */
  #instance(vm: WarmedInstance, image: GceImage, vmSize: string | undefined, began: number, options: StartOptions, logger: Logger): GceInstance {
    const settings = this.#settings;
    const { name, zone, address } = vm;
    return new GceInstance({
      ssh: new SshMachine({
        id: name,
        imageName: String(image.name),
        startupMs: Date.now() - began,
        target: { host: address, port: SSH_PORT, username: settings.sshUser, privateKey: vm.privateKey },
        dialTimeoutMs: settings.sshDialTimeout,
        retrySleepMs: settings.uploadRetrySleep,
        maxAttempts: settings.uploadRetries,
        logger,
      }),
      address,
      vmSize,
      sshAttempts: settings.uploadRetries,
      preemptible: settings.preemptible,
      wasPreempted: () => this.#wasPreempted(zone, name, logger),
      delete: () => this.#deleteEverywhere(name, [zone], logger),
      progress: options.progress,
      recordPhase: options.recordPhase,
      logger,
    });
  }

  /**
   * A running VM from travis' warmer service, or undefined (logged) when it
   * has none to give: the caller boots one.
   */
  async #fromWarmer(zone: string, image: GceImage, machineType: string, options: StartOptions): Promise<WarmedInstance | undefined> {
    const settings = this.#settings;
    try {
      const warmed = await requestWarmedInstance(
        {
          site: settings.travisSite,
          zone,
          image_name: String(image.selfLink),
          machine_type: `zones/${zone}/machineTypes/${machineType}`,
          public_ip: settings.publicIp,
        },
        {
          url: settings.warmerUrl,
          timeoutMs: settings.warmerTimeout,
          passphrase: settings.warmerSshPassphrase,
          publicIpConnect: settings.publicIp && settings.publicIpConnect,
          signal: options.signal,
        },
      );
      options.logger.info({ instance: warmed.name, zone: warmed.zone, address: warmed.address }, 'got an instance from the warmer');
      options.progress('obtained instance');
      return warmed;
    } catch (err) {
      if (!(err instanceof WarmerError)) throw err;
      options.logger.warn({ err: err.message }, 'could not obtain an instance from the warmer; booting one');
      const unusable = err.unusable;
      if (unusable) {
        // Handed over all the same: nobody else will delete it.
        void this.#deleteEverywhere(unusable.name, [unusable.zone], options.logger).catch((deleteErr: unknown) =>
          options.logger.error({ instance: unusable.name, err: errorMessage(deleteErr) }, 'could not delete the unusable instance from the warmer'),
        );
      }
      return undefined;
    }
  }

  #startError(name: string, err: unknown): Error {
    if (isMayflyError(err)) return err;
    const kind = kindOf(err);
    if (kind === 'quota' || kind === 'capacity') {
      return new NoCapacityError(`instance ${name}: no ${kind}: ${errorMessage(err)}`, {
        cause: err,
        userMessage: `GCE had no ${kind} for the build VM; the job will be run again.`,
      });
    }
    const hint = needsSubnetwork(err) ? ' (the network is a custom-mode VPC: set TRAVIS_WORKER_GCE_SUBNETWORK)' : '';
    return new InstanceStartError(`could not start instance ${name}${hint}: ${errorMessage(err)}`, {
      cause: err,
      userMessage: 'The build VM could not be started; the job will be run again.',
    });
  }

  /**
   * A zone operation once it is DONE, through the API's own wait (each call
   * held up to two minutes) rather than travis' sleep-then-poll: the
   * answer comes as the operation finishes.
   */
  async #awaitOperation(zone: string, operation: GceOperation, signal: AbortSignal): Promise<GceOperation> {
    let current = operation;
    while (current.status !== 'DONE') current = await this.#api.waitOperation(this.#project, zone, operation.name, signal);
    return current;
  }

  /**
   * The VM once RUNNING. Its insert operation is DONE by now, which mostly
   * means RUNNING already; when not, it is asked again after pauses growing
   * from STATUS_POLL_FIRST_MS up to BOOT_POLL_SLEEP.
   */
  async #awaitRunning(zone: string, name: string, signal: AbortSignal): Promise<{ instance: GceInstanceResource; runningAt: number }> {
    const pauses = growingDelays(STATUS_POLL_FIRST_MS, this.#settings.bootPollSleep);
    for (;;) {
      const instance = await this.#api.getInstance(this.#project, zone, name, signal);
      if (instance.status === 'RUNNING') return { instance, runningAt: Date.now() };
      if (STOPPED_STATES.has(String(instance.status))) {
        throw new InstanceStartError(`instance ${name} stopped while booting (${instance.status})`, {
          userMessage: 'The build VM stopped while booting; the job will be run again.',
        });
      }
      await abortableSleep(pauses.next().value, signal);
    }
  }

  async #wasPreempted(zone: string, name: string, logger: Logger): Promise<boolean> {
    try {
      const instance = await this.#api.getInstance(this.#project, zone, name, AbortSignal.timeout(PREEMPTION_CHECK_MS));
      return STOPPED_STATES.has(String(instance.status));
    } catch (err) {
      if (isGone(err)) return true;
      logger.warn({ err: errorMessage(err) }, 'could not tell whether the instance was preempted');
      return false;
    }
  }

  /** Delete `name` in each zone; throws when it may still exist somewhere. */
  async #deleteEverywhere(name: string, zones: readonly string[], logger: Logger): Promise<void> {
    const signal = AbortSignal.timeout(DELETE_DEADLINE_MS);
    const results = await Promise.allSettled([...new Set(zones)].map((zone) => this.#deleteInZone(zone, name, logger, signal)));
    const failed = results.find((result): result is PromiseRejectedResult => result.status === 'rejected');
    if (failed) throw failed.reason;
  }

  /**
   * Delete, wait for the operation, and check the VM is really gone: a
   * delete that reported done while the VM stayed is sent again.
   */
  async #deleteInZone(zone: string, name: string, logger: Logger, signal: AbortSignal): Promise<void> {
    const settings = this.#settings;
    for (let attempt = 1; attempt <= DELETE_ATTEMPTS; attempt++) {
      let operation: GceOperation;
      try {
        operation = await this.#api.deleteInstance(this.#project, zone, name, signal);
      } catch (err) {
        if (isGone(err)) return;
        throw err;
      }
      if (settings.skipStopPoll) return;
      const done = await this.#awaitOperation(zone, operation, signal);
      const failure = operationFailure(done);
      try {
        const still = await this.#api.getInstance(this.#project, zone, name, signal);
        logger.warn(
          { zone, attempt, status: still.status, err: failure ? errorMessage(failure) : undefined },
          'instance still exists after its deletion finished; deleting again',
        );
      } catch (err) {
        if (isGone(err)) {
          logger.debug({ zone }, 'instance deleted');
          return;
        }
        throw err;
      }
    }
    throw new Error(`instance ${name} in ${zone} still exists after ${DELETE_ATTEMPTS} deletions`);
  }

  /** Every VM with mayfly's labels in the zones this worker uses (ZONES, or the worker's own), any worker's. */
  async listManaged(signal: AbortSignal): Promise<ManagedInstance[]> {
    const placement = await raceAbort(this.placement(), signal);
    const found: ManagedInstance[] = [];
    const zones = new Map<string, string>();
    for (const zone of placement.zones) {
      for (const resource of await this.#api.listInstances(placement.projectId, zone, MANAGED_FILTER, signal)) {
        const managed = managedInstance(resource, this.#context.hostname);
        if (managed === undefined) continue;
        found.push(managed);
        zones.set(managed.id, zone);
      }
    }
    this.#managedZones.clear();
    for (const [name, zone] of zones) this.#managedZones.set(name, zone);
    return found;
  }

  /** Delete a VM the last `listManaged` returned (and only such a VM). */
  async destroyManaged(id: string, signal: AbortSignal): Promise<void> {
    const zone = this.#managedZones.get(id);
    if (zone === undefined) throw new Error(`instance ${id} was not listed as one of mayfly's: not deleting it`);
    await this.#deleteInZone(zone, id, this.#context.logger.child({ instance: id }), signal);
    this.#managedZones.delete(id);
  }

  async close(): Promise<void> {
    this.#closing.abort(new Error('gce backend closed'));
    await this.#api.close();
  }
}
