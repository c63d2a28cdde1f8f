/**
 * The `qemu` backend: a throw-away VM per job on this host. Start reserves
 * room (MAX_VMS, cores, in bridge mode an address), picks the golden image,
 * makes the VM's directory (lease, NoCloud seed with the job's key,
 * copy-on-write overlay), launches QEMU pinned to its cores, and waits
 * until SSH answers. Anything half-made is removed again when a step fails,
 * QEMU dies during boot, or the start is aborted (startup timeout, cancel).
 *
 * Over the usual size: each step of the start undoes the steps before it
 * when it fails, so they read best in one place; the VM, its network,
 * seed, lease and QMP are modules of their own.
 */
import { accessSync, constants } from 'node:fs';
import { mkdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import {
  ConfigError,
  CpuSetPool,
  InstanceStartError,
  NoCapacityError,
  SshMachine,
  errorMessage,
  freePort,
  generateJobKeyPair,
  isMayflyError,
  type Backend,
  type BackendContext,
  type Instance,
  type Logger,
  type MachineShape,
  type ManagedInstance,
  type StartAttributes,
  type StartOptions,
} from '../../src/backend/kit.js';
import { LOOPBACK, qemuCommand, vmFiles, type VmFiles, type VmNetwork } from './command.js';
import { selectImage } from './images.js';
import { QemuInstance } from './instance.js';
import { listVms, removeVm, vmName, writeLease } from './lease.js';
import { AddressPool, randomMac } from './network.js';
import { writeSeed, type StaticAddress } from './seed.js';
import { cpuSetSizeOf, findProgram, maxVmsOf, parseAddresses, type QemuSettings } from './settings.js';
import { runTool } from './tools.js';
import { describeExit, QemuVm, type VmExit } from './vm.js';

/** Programs every VM is made with besides QEMU's own, and the Debian package of each. */
const HOST_TOOLS = [
  ['mkfs.vfat', 'dosfstools'],
  ['mcopy', 'mtools'],
  ['taskset', 'util-linux'],
] as const;
/** The host tools not found on `path`, each with its Debian package. */
export function missingHostTools(path?: string): string[] {
  return HOST_TOOLS.filter(([tool]) => findProgram(tool, path) === undefined).map(([tool, pkg]) => `${tool} (${pkg})`);
}

/** Beyond the hard timeout: startup, upload and destroy of the job may take this long too (as the cloud backends). */
const LEASE_MARGIN_MS = 30 * 60_000;
/** Between SSH connection attempts while the guest boots (a TCG boot takes seconds; KVM well under one). */
const SSH_RETRY_SLEEP_MS = 250;
/**
 * SSH attempts while the guest boots: the startup timeout is what really
 * bounds the wait; this only keeps a count that no boot reaches.
 */
const SSH_BOOT_ATTEMPTS = 100_000;
/** Another process may bind the free port between our check and QEMU's bind: pick again this many times. */
const PORT_ATTEMPTS = 3;
/** QEMU's words when the forwarded port is taken. */
const PORT_TAKEN = /hostfwd|host forwarding/i;
/** Tearing down a failed start must not hang: QEMU is killed, not asked. */
const DISCARD_GRACE_MS = 0;

/** Where SSH reaches a VM and what the VM's network is. */
interface Reach {
  network: VmNetwork;
  host: string;
  port: number;
  staticAddress: StaticAddress | undefined;
}

export class QemuBackend implements Backend {
  readonly #settings: QemuSettings;
  readonly #context: BackendContext;
  readonly #cores: CpuSetPool;
  readonly #addresses: AddressPool;
  readonly #maxVms: number;
  readonly #accel: 'kvm' | 'tcg';
  #running = 0;
  /** VMs the last `listManaged` found: `destroyManaged` removes only these. */
  #managed = new Set<string>();

  /**
   * Takes settings that passed `validateSettings`; `kvmUsable` says whether
   * /dev/kvm can be opened (ACCEL=auto). Throws `ConfigError` when a host
   * tool every VM needs is missing, so the worker does not start to fail every job.
   */
  constructor(settings: QemuSettings, context: BackendContext, kvmUsable: boolean) {
    const missing = missingHostTools();
    if (missing.length > 0) throw new ConfigError(`the qemu backend needs ${missing.join(', ')} on the worker's PATH`);
    this.#settings = settings;
    this.#context = context;
    this.#cores = new CpuSetPool(cpuSetSizeOf(settings));
    this.#addresses = new AddressPool(settings.network === 'bridge' ? parseAddresses(settings.bridgeAddresses) : []);
    this.#maxVms = maxVmsOf(settings);
    this.#accel = chooseAccel(settings.accel, kvmUsable, context.logger);
  }

  /** VMs running (or starting) now. */
  get running(): number {
    return this.#running;
  }

  /**
   * The image `start` would boot, and which file that is now: its inode and
   * mtime, so a golden image replaced in place (renamed over, or rewritten)
   * is a new shape and idle VMs booted from the old one are replaced. CPUs,
   * memory, disk size and kernel are settings, the same for every job, so
   * the image alone tells VMs apart.
   */
  async shape(attributes: StartAttributes, signal: AbortSignal): Promise<MachineShape> {
    signal.throwIfAborted();
    const settings = this.#settings;
    const image = await selectImage(attributes, settings.images, settings.imageDir);
    const file = await stat(image.path).catch((err: unknown) => {
      // Gone between the check and the look: what `start` says of a missing image.
      throw new InstanceStartError(`image ${image.path} cannot be read: ${errorMessage(err)}`, { cause: err });
    });
    return { key: `image=${image.name} inode=${file.ino} mtime=${Math.trunc(file.mtimeMs)}`, image: image.name };
  }

  async start(attributes: StartAttributes, options: StartOptions): Promise<Instance> {
    const { signal, progress, recordPhase } = options;
    signal.throwIfAborted();
    const began = Date.now();
    const settings = this.#settings;
    const image = await selectImage(attributes, settings.images, settings.imageDir);
    const release = this.#reserve();
    const name = vmName(attributes.jobId);
    const files = vmFiles(join(settings.workDir, name));
    const logger = options.logger.child({ vm: name });
    let vm: QemuVm | undefined;
    let ssh: SshMachine | undefined;
    try {
      await mkdir(settings.workDir, { recursive: true });
      await mkdir(files.dir, { mode: 0o700 });
      // First, so a worker killed from here on leaves a VM the reaper knows.
      await writeLease(files.lease, {
        worker: this.#context.hostname,
        jobId: attributes.jobId,
        repository: attributes.repository,
        leaseExpiresAt: new Date(Date.now() + attributes.hardTimeoutMs + LEASE_MARGIN_MS).toISOString(),
        createdAt: new Date().toISOString(),
      });
      progress(`Creating VM ${name} from image ${image.name}`);
      const createStarted = Date.now();
      await runTool(settings.imgBinary, overlayArgs(image.path, files.overlay, settings.diskSize), signal);
      const key = generateJobKeyPair();
      const reach = await this.#reach(release.address);
      await writeSeed(
        files.dir,
        files.seed,
        {
          hostname: name,
          publicKey: key.publicKey,
          user: settings.sshUser,
          implodeAfterMinutes: settings.autoImplode ? Math.ceil((attributes.hardTimeoutMs + LEASE_MARGIN_MS) / 60_000) : undefined,
          network: reach.staticAddress,
        },
        signal,
      );
      recordPhase('create', Date.now() - createStarted);

      progress(`Booting VM ${name}`);
      const bootStarted = Date.now();
      vm = await this.#launch(name, files, release.cpuset, reach, logger, signal);
      recordPhase('running', Date.now() - bootStarted);
      recordPhase('ip', 0);

      ssh = new SshMachine({
        id: name,
        imageName: image.name,
        startupMs: 0,
        target: { host: reach.host, port: reach.port, username: settings.sshUser, privateKey: key.privateKey },
        dialTimeoutMs: settings.sshDialTimeout,
        retrySleepMs: SSH_RETRY_SLEEP_MS,
        logger,
      });
      const sshStarted = Date.now();
      // Booted means SSH answers: the startup timeout covers the boot, and the upload finds the connection open.
      await ssh.exec('true', { signal: AbortSignal.any([signal, vm.died]), maxAttempts: SSH_BOOT_ATTEMPTS });
      recordPhase('ssh-ready', Date.now() - sshStarted);
      const startupMs = Date.now() - began;
      progress(`VM ${name} is up after ${(startupMs / 1000).toFixed(1)}s`);
      const running = vm;
      return new QemuInstance({
        ssh,
        vm: running,
        startupMs,
        teardown: () => this.#teardown(running, files, release, settings.shutdownTimeout, logger),
        recordPhase,
        logger,
      });
    } catch (err) {
      await ssh?.destroy().catch(() => {});
      const died = vm?.died.aborted === true ? (vm.died.reason as VmExit) : undefined;
      await this.#teardown(vm, files, release, DISCARD_GRACE_MS, logger).catch((cleanup: unknown) => {
        // The start's own error is the one that matters; this one is for the operator.
        logger.error({ dir: files.dir, err: errorMessage(cleanup) }, 'could not remove the directory of a failed VM start: remove it by hand');
      });
      if (signal.aborted) throw signal.reason;
      if (died !== undefined) throw new InstanceStartError(`VM ${name} stopped while it booted (${describeExit(died)})`, { cause: err });
      if (isMayflyError(err)) throw err;
      throw new InstanceStartError(`could not start VM ${name}: ${errorMessage(err)}`, { cause: err });
    }
  }

  async close(): Promise<void> {
    // Nothing backend-wide to release: each VM is its own child process, destroyed with its job.
  }

  /** Every VM directory in WORK_DIR with a lease (any worker's that shares the directory). */
  async listManaged(): Promise<ManagedInstance[]> {
    const found = await listVms(this.#settings.workDir);
    this.#managed = new Set(found.map((vm) => vm.id));
    return found;
  }

  /** Kill and remove a VM the last `listManaged` returned (and only such a VM). */
  async destroyManaged(id: string, signal: AbortSignal): Promise<void> {
    if (!this.#managed.has(id)) throw new Error(`VM ${id} was not listed as one of mayfly's: not removing it`);
    await removeVm(join(this.#settings.workDir, id), signal);
    this.#managed.delete(id);
  }

  /** Room for one more VM: a slot under MAX_VMS, its cores, its address; or `NoCapacityError`, never an overcommit. */
  #reserve(): Reservation {
    const settings = this.#settings;
    if (this.#running >= this.#maxVms) {
      throw new NoCapacityError(`this host runs ${this.#running} VMs, its limit (TRAVIS_WORKER_QEMU_MAX_VMS or its cores): no room for another`);
    }
    const cpuset = this.#cores.checkout(settings.cpus);
    if (cpuset === undefined) {
      throw new NoCapacityError(`no ${settings.cpus} free cores for another VM (${this.#cores.free} of ${this.#cores.size} free)`);
    }
    let address: string | undefined;
    if (settings.network === 'bridge') {
      address = this.#addresses.checkout();
      if (address === undefined) {
        this.#cores.checkin(cpuset);
        throw new NoCapacityError('every address of TRAVIS_WORKER_QEMU_BRIDGE_ADDRESSES is in use: no room for another VM');
      }
    }
    this.#running++;
    let released = false;
    return {
      cpuset,
      address,
      release: () => {
        if (released) return;
        released = true;
        this.#running--;
        this.#cores.checkin(cpuset);
        if (address !== undefined) this.#addresses.checkin(address);
      },
    };
  }

  async #reach(address: string | undefined): Promise<Reach> {
    const settings = this.#settings;
    if (address === undefined) {
      const port = await freePort(LOOPBACK);
      return { network: { mode: 'user', sshPort: port }, host: LOOPBACK, port, staticAddress: undefined };
    }
    const mac = randomMac();
    return {
      network: { mode: 'bridge', bridge: settings.bridge, mac },
      host: address.split('/')[0] as string,
      port: 22,
      staticAddress: {
        mac,
        address,
        gateway: settings.bridgeGateway.trim(),
        nameservers: settings.bridgeNameservers.split(/\s+/).filter((word) => word !== ''),
      },
    };
  }

  /** QEMU up with its monitor answering; in user mode a port taken meanwhile is picked again. */
  async #launch(name: string, files: VmFiles, cpuset: string, reach: Reach, logger: Logger, signal: AbortSignal): Promise<QemuVm> {
    const settings = this.#settings;
    let network = reach.network;
    for (let attempt = 1; ; attempt++) {
      const command = qemuCommand(settings.binary, {
        name,
        files,
        accel: this.#accel,
        cpus: settings.cpus,
        cpuset,
        memory: settings.memory,
        network,
        kernel: settings.kernel === '' ? undefined : { kernel: settings.kernel, initrd: settings.initrd, append: settings.append },
      });
      try {
        return await QemuVm.launch(command, logger, signal);
      } catch (err) {
        if (signal.aborted || network.mode !== 'user' || attempt >= PORT_ATTEMPTS || !PORT_TAKEN.test(errorMessage(err))) throw err;
        logger.warn({ port: network.sshPort }, 'the SSH forward port was taken before QEMU bound it; picking another');
        const port = await freePort(LOOPBACK);
        network = { mode: 'user', sshPort: port };
        reach.port = port;
      }
    }
  }

  /** Stop the VM (if it ran), remove its directory, give back its room. Throws only when the directory can't be removed. */
  async #teardown(vm: QemuVm | undefined, files: VmFiles, reservation: Reservation, graceMs: number, logger: Logger): Promise<void> {
    try {
      if (vm !== undefined) {
        const exit = await vm.shutdown(graceMs);
        logger.debug({ exit: describeExit(exit) }, 'qemu stopped');
      }
      await removeVm(files.dir, AbortSignal.timeout(DIRECTORY_REMOVAL_TIMEOUT_MS));
    } finally {
      reservation.release();
    }
  }
}

/** Removing a VM's directory (and a QEMU that outlived its kill) is quick; past this, destroy fails and is retried. */
const DIRECTORY_REMOVAL_TIMEOUT_MS = 30_000;

interface Reservation {
  cpuset: string;
  address: string | undefined;
  /** Give the slot, cores and address back; once. */
  release(): void;
}

/** `qemu-img create` of a job's overlay on `image`: copy-on-write, the golden image only read. */
export function overlayArgs(image: string, overlay: string, diskSize: string): string[] {
  return ['create', '-q', '-f', 'qcow2', '-b', image, '-F', 'qcow2', overlay, ...(diskSize === '' ? [] : [diskSize])];
}

/** The accelerator a VM uses; ACCEL=auto falls back to TCG, saying what it costs. */
export function chooseAccel(setting: string, kvmUsable: boolean, logger: Logger): 'kvm' | 'tcg' {
  if (setting === 'kvm' || setting === 'tcg') return setting;
  if (kvmUsable) return 'kvm';
  logger.warn(
    'TRAVIS_WORKER_QEMU_ACCEL=auto: /dev/kvm cannot be opened, so VMs are emulated (TCG): boots and builds run several times slower; give the worker KVM or set ACCEL=tcg to silence this',
  );
  return 'tcg';
}

/** Whether this process may open /dev/kvm for reading and writing, as QEMU does. */
export function kvmUsable(): boolean {
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
    return true;
  } catch {
    return false;
  }
}
