/**
 * Settings of the `qemu` backend (`TRAVIS_WORKER_QEMU_<KEY>`) and the checks
 * the schema can't make: sizes as QEMU writes them, files that must exist,
 * the bridge mode's address pool. Every parse error is an `Error` saying
 * what is wrong; `validateSettings` collects them when the configuration is
 * loaded, so `create` only ever gets settings that passed.
 */
import { accessSync, constants } from 'node:fs';
import { availableParallelism } from 'node:os';
import { delimiter, isAbsolute, join } from 'node:path';
import { settingProblems, type SettingProblem, type SettingsSchema } from '../../src/backend/kit.js';

export interface QemuSettings {
  /** The emulator, `qemu-system-x86_64` (found on PATH) or a path. */
  binary: string;
  /** `qemu-img`, which makes each job's overlay. */
  imgBinary: string;
  /** Where each VM's directory (overlay, seed, pidfile, lease) is made; must be on a local disk. */
  workDir: string;
  /** Where relative image paths and a job's `image_name` are looked up. */
  imageDir: string;
  /** Virtual CPUs per VM; each is a host core no other VM of this worker gets. */
  cpus: number;
  /** Cores there are to hand out; 0 = this machine's count. */
  cpuSetSize: number;
  /** Guest memory as QEMU's `-m` takes it: mebibytes, or a number with `M`/`G`. */
  memory: string;
  /** Size of each job's disk (`qemu-img` size: `20G`); empty = the golden image's own size. */
  diskSize: string;
  /** VMs this worker runs at once at most; 0 = as many as the cores allow. */
  maxVms: number;
  /** `kvm`, `tcg` (emulation), or `auto`: KVM when `/dev/kvm` can be opened, else TCG with a warning. */
  accel: string;
  /** `user` (SSH forwarded to a loopback port; no root, no bridge) or `bridge` (a tap on BRIDGE, addresses from BRIDGE_ADDRESSES). */
  network: string;
  /** Bridge the VMs' taps join (through qemu-bridge-helper, allowed in /etc/qemu/bridge.conf). */
  bridge: string;
  /** Bridge mode: the guests' addresses, `ip/prefix` separated by spaces; one per running VM. */
  bridgeAddresses: string;
  /** Bridge mode: the guests' default gateway; empty = none. */
  bridgeGateway: string;
  /** Bridge mode: the guests' DNS servers, separated by spaces. */
  bridgeNameservers: string;
  /** Direct-kernel boot: the kernel QEMU loads (`-kernel`); empty = the image boots its own. */
  kernel: string;
  /** Direct-kernel boot: the initramfs (`-initrd`); empty = none. */
  initrd: string;
  /** Direct-kernel boot: the kernel command line (`-append`). */
  append: string;
  /** The user the job's key is given to, and SSH logs in as. */
  sshUser: string;
  /** Per SSH connection attempt, in ms. */
  sshDialTimeout: number;
  /** After asking the guest to power off, how long it may take before QEMU is told to quit, in ms. */
  shutdownTimeout: number;
  /** The guest powers itself off after the job's hard limit plus a margin, even if the worker is gone. */
  autoImplode: boolean;
  /** `IMAGE_<NAME>` variables, name lower-cased: golden qcow2 images by image key. */
  images: Record<string, string>;
}

export const settingsSchema: SettingsSchema<Omit<QemuSettings, 'images'>> = {
  binary: { doc: 'the QEMU emulator to run (on PATH, or a path)', format: String, default: 'qemu-system-x86_64' },
  imgBinary: { doc: 'qemu-img, which makes each job\'s copy-on-write overlay', format: String, default: 'qemu-img' },
  workDir: { doc: 'directory for the VMs\' overlays, seeds and pidfiles (one subdirectory per VM, removed with it)', format: String, default: '/var/lib/mayfly/qemu' },
  imageDir: { doc: 'directory of the golden images: relative IMAGE_<NAME> paths and a job\'s image_name are looked up here', format: String, default: '/var/lib/mayfly/images' },
  cpus: { doc: 'virtual CPUs per VM, each pinned to a host core no other VM gets', format: 'nat', default: 2 },
  cpuSetSize: { doc: 'host cores to hand out to VMs (0 = this machine\'s count)', format: 'nat', default: 0 },
  memory: { doc: 'guest memory as QEMU\'s -m takes it (e.g. 4G, 512M)', format: String, default: '4G' },
  diskSize: { doc: 'size of each job\'s disk, e.g. 20G (empty = the golden image\'s own size)', format: String, default: '' },
  maxVms: { doc: 'VMs running at once at most; a job beyond it is requeued (0 = as many as the cores allow)', format: 'nat', default: 0 },
  accel: { doc: 'kvm, tcg (emulation: several times slower) or auto (KVM when /dev/kvm can be opened, else TCG with a warning)', format: ['auto', 'kvm', 'tcg'], default: 'auto' },
  network: { doc: 'user (SSH forwarded to a loopback port, no root needed) or bridge (a tap on BRIDGE, addresses from BRIDGE_ADDRESSES)', format: ['user', 'bridge'], default: 'user' },
  bridge: { doc: 'bridge mode: the bridge the VMs join (allowed in /etc/qemu/bridge.conf for qemu-bridge-helper)', format: String, default: '' },
  bridgeAddresses: { doc: 'bridge mode: guest addresses, ip/prefix separated by spaces, one per running VM', format: String, default: '' },
  bridgeGateway: { doc: 'bridge mode: the guests\' default gateway (empty = none)', format: String, default: '' },
  bridgeNameservers: { doc: 'bridge mode: the guests\' DNS servers, separated by spaces', format: String, default: '' },
  kernel: { doc: 'direct-kernel boot: kernel for -kernel (empty = the image boots its own kernel)', format: String, default: '' },
  initrd: { doc: 'direct-kernel boot: initramfs for -initrd', format: String, default: '' },
  append: { doc: 'direct-kernel boot: kernel command line for -append', format: String, default: 'console=ttyS0 root=/dev/vda rw panic=-1' },
  sshUser: { doc: 'user the job\'s key is given to (made by cloud-init when the image lacks it)', format: String, default: 'travis' },
  sshDialTimeout: { doc: 'time allowed for one SSH connection attempt', format: 'duration', default: 5_000 },
  shutdownTimeout: { doc: 'grace period for the guest to power off before QEMU is told to quit', format: 'duration', default: 10_000 },
  autoImplode: { doc: 'VMs power themselves off after the job\'s hard limit plus a margin, even if the worker is gone', format: Boolean, default: true },
};

/** QEMU's `-m`: a number of mebibytes, or with an `M`/`G` suffix. */
const MEMORY = /^[1-9]\d*[MG]?$/i;
/** qemu-img's size: a number with an optional k/M/G/T suffix. */
const DISK_SIZE = /^[1-9]\d*[kKMGT]?$/;
/** A POSIX user name (what cloud-init's `users` accepts). */
const USER_NAME = /^[a-z_][a-z0-9_-]{0,31}$/;
/** A bridge (network interface) name: at most 15 characters (Linux IFNAMSIZ - 1). */
const BRIDGE_NAME = /^[A-Za-z0-9_.-]{1,15}$/;
const IPV4 = /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$/;

/** `ip/prefix` words: the bridge mode's guest addresses. Throws naming the word that is not one. */
export function parseAddresses(text: string): string[] {
  const addresses = text.split(/\s+/).filter((word) => word !== '');
  for (const address of addresses) {
    const [ip = '', prefix = '', ...rest] = address.split('/');
    if (!IPV4.test(ip) || !/^\d{1,2}$/.test(prefix) || Number(prefix) > 32 || rest.length > 0) {
      throw new Error(`"${address}" is not an IPv4 address with a prefix length (write it like 192.168.50.10/24)`);
    }
  }
  return addresses;
}

function ipv4List(text: string): string[] {
  const list = text.split(/\s+/).filter((word) => word !== '');
  for (const ip of list) if (!IPV4.test(ip)) throw new Error(`"${ip}" is not an IPv4 address`);
  return list;
}

/** Cores there are to hand out. */
export function cpuSetSizeOf(settings: Pick<QemuSettings, 'cpuSetSize'>): number {
  return settings.cpuSetSize === 0 ? availableParallelism() : settings.cpuSetSize;
}

/** How many VMs may run at once: MAX_VMS, never more than the cores allow. */
export function maxVmsOf(settings: Pick<QemuSettings, 'cpuSetSize' | 'cpus' | 'maxVms'>): number {
  const byCores = Math.floor(cpuSetSizeOf(settings) / Math.max(1, settings.cpus));
  return settings.maxVms === 0 ? byCores : Math.min(settings.maxVms, byCores);
}

/** A file the worker must be able to read; `what` says what it is for. */
function readable(path: string, what: string): void {
  try {
    accessSync(path, constants.R_OK);
  } catch {
    throw new Error(`${what} ${path} does not exist or cannot be read`);
  }
}

/** Where `command` runs from: itself when it names a path, else the first match on PATH; undefined when it can't be run. */
export function findProgram(command: string, path: string = process.env.PATH ?? ''): string | undefined {
  const candidates = command.includes('/') ? [command] : path.split(delimiter).filter((dir) => dir !== '').map((dir) => join(dir, command));
  return candidates.find((candidate) => {
    try {
      accessSync(candidate, constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

function program(command: string): void {
  if (findProgram(command) === undefined) throw new Error(`"${command}" is not a program this worker can run (not found, or not executable, on PATH)`);
}

/** What the schema can't check (the backend's `validate` hook): every problem, keyed by setting. */
export function validateSettings(settings: QemuSettings): SettingProblem[] {
  const bridged = settings.network === 'bridge';
  const checks: [string, () => unknown][] = [
    ['memory', () => MEMORY.test(settings.memory) || fail(`"${settings.memory}" is not a memory size (write it like 4G or 512M)`)],
    ['diskSize', () => settings.diskSize === '' || DISK_SIZE.test(settings.diskSize) || fail(`"${settings.diskSize}" is not a disk size (write it like 20G)`)],
    ['cpus', () => settings.cpus >= 1 || fail('must be at least 1')],
    [
      'cpus',
      () => settings.cpus <= cpuSetSizeOf(settings) || fail(`${settings.cpus} is more than the ${cpuSetSizeOf(settings)} cores there are (TRAVIS_WORKER_QEMU_CPU_SET_SIZE)`),
    ],
    ['binary', () => program(settings.binary)],
    ['imgBinary', () => program(settings.imgBinary)],
    ['workDir', () => isAbsolute(settings.workDir) || fail(`"${settings.workDir}" is not an absolute path`)],
    ['sshUser', () => USER_NAME.test(settings.sshUser) || fail(`"${settings.sshUser}" is not a user name`)],
    ['kernel', () => settings.kernel === '' || readable(settings.kernel, 'the kernel')],
    ['initrd', () => settings.initrd === '' || readable(settings.initrd, 'the initramfs')],
    ['initrd', () => settings.initrd === '' || settings.kernel !== '' || fail('is set without TRAVIS_WORKER_QEMU_KERNEL: an initramfs is only used for direct-kernel boot')],
    ['bridge', () => !bridged || BRIDGE_NAME.test(settings.bridge) || fail('must name the bridge the VMs join in bridge mode (e.g. br0)')],
    ['bridgeAddresses', () => !bridged || parseAddresses(settings.bridgeAddresses).length > 0 || fail('must list the guests\' addresses in bridge mode (e.g. "192.168.50.10/24 192.168.50.11/24")')],
    ['bridgeGateway', () => ipv4List(settings.bridgeGateway).length <= 1 || fail('is one address')],
    ['bridgeNameservers', () => ipv4List(settings.bridgeNameservers)],
  ];
  for (const [name, path] of Object.entries(settings.images)) {
    // Keyed `image.<name>`, so the loader names the variable itself: TRAVIS_WORKER_QEMU_IMAGE_<NAME>.
    checks.push([`image.${name}`, () => readable(imagePath(settings.imageDir, path), 'the image')]);
  }
  return settingProblems(checks);
}

function fail(problem: string): never {
  throw new Error(problem);
}

/** A golden image's path: absolute as given, else under IMAGE_DIR. */
export function imagePath(imageDir: string, path: string): string {
  return isAbsolute(path) ? path : join(imageDir, path);
}
