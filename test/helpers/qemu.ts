/**
 * The qemu backend's tests: the guest scripts/test-prerequisites.sh builds
 * once (scripts/qemu-test-guest.sh: a golden qcow2 image from the docker
 * test image's debootstrap tree, Debian's cloud kernel and a small
 * initramfs for direct-kernel boot), settings for it, and a look at what a
 * test's VMs left: directories in the work directory, QEMU processes
 * running its files. Used by the bench too, so it does not import vitest
 * (qemu-describe.ts holds what does).
 */
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findProgram, type QemuSettings } from '../../backends/qemu/settings.js';

/** Kept in step with scripts/test-prerequisites.sh. */
export const TEST_GUEST_DIR = process.env.MAYFLY_TEST_QEMU_GUEST ?? '/var/cache/mayfly-test/qemu';
export const TEST_GOLDEN_IMAGE = join(TEST_GUEST_DIR, 'golden.qcow2');
export const TEST_KERNEL = join(TEST_GUEST_DIR, 'vmlinuz');
export const TEST_INITRD = join(TEST_GUEST_DIR, 'initrd.img');
/** The test guest's init reads the seed itself (see scripts/qemu-test-guest.sh). */
export const TEST_APPEND = 'console=ttyS0 panic=-1 quiet';
/** A VM boots to SSH in seconds under TCG, far longer when the two cores are busy with other tests. */
export const VM_TEST_TIMEOUT_MS = 180_000;

/** What the backend runs, and what its tests read the seed back with. */
const TOOLS = ['qemu-system-x86_64', 'qemu-img', 'mkfs.vfat', 'mcopy', 'mtype', 'mlabel', 'taskset'];

/** Why the qemu tests can't run here, or undefined when they can. */
export function qemuUnavailable(): string | undefined {
  const missing = TOOLS.filter((tool) => findProgram(tool) === undefined);
  if (missing.length > 0) return `missing ${missing.join(', ')}`;
  const files = [TEST_GOLDEN_IMAGE, TEST_KERNEL, TEST_INITRD].filter((file) => !existsSync(file));
  if (files.length > 0) return `the test guest is not built (${files.join(', ')} missing)`;
  return undefined;
}

/** A fresh work directory under /tmp (short: QEMU's paths stay readable in `ps`). */
export function testWorkDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'mayfly-qemu-'));
}

/** Settings for the test guest, as an operator would write them, with what a test is about overridden. */
export function testQemuSettings(workDir: string, overrides: Partial<QemuSettings> = {}): QemuSettings {
  return {
    binary: 'qemu-system-x86_64',
    imgBinary: 'qemu-img',
    workDir,
    imageDir: TEST_GUEST_DIR,
    cpus: 1,
    cpuSetSize: 2,
    memory: '512M',
    diskSize: '',
    maxVms: 0,
    // No usable KVM on CI; `auto` would try /dev/kvm where it exists but does not work.
    accel: 'tcg',
    network: 'user',
    bridge: '',
    bridgeAddresses: '',
    bridgeGateway: '',
    bridgeNameservers: '',
    kernel: TEST_KERNEL,
    initrd: TEST_INITRD,
    append: TEST_APPEND,
    sshUser: 'travis',
    sshDialTimeout: 5_000,
    // The test guest's shell init has no ACPI daemon: the power button does nothing, so quit follows at once.
    shutdownTimeout: 0,
    autoImplode: true,
    images: { default: TEST_GOLDEN_IMAGE },
    ...overrides,
  };
}

/** The same settings as the worker reads them from the environment. */
export function testQemuEnv(workDir: string, overrides: Record<string, string> = {}): Record<string, string> {
  return {
    TRAVIS_WORKER_PROVIDER_NAME: 'qemu',
    TRAVIS_WORKER_QEMU_WORK_DIR: workDir,
    TRAVIS_WORKER_QEMU_IMAGE_DIR: TEST_GUEST_DIR,
    TRAVIS_WORKER_QEMU_IMAGE_DEFAULT: TEST_GOLDEN_IMAGE,
    TRAVIS_WORKER_QEMU_CPUS: '1',
    TRAVIS_WORKER_QEMU_CPU_SET_SIZE: '2',
    TRAVIS_WORKER_QEMU_MEMORY: '512M',
    TRAVIS_WORKER_QEMU_ACCEL: 'tcg',
    TRAVIS_WORKER_QEMU_KERNEL: TEST_KERNEL,
    TRAVIS_WORKER_QEMU_INITRD: TEST_INITRD,
    TRAVIS_WORKER_QEMU_APPEND: TEST_APPEND,
    TRAVIS_WORKER_QEMU_SHUTDOWN_TIMEOUT: '0s',
    ...overrides,
  };
}

/** Pids of the processes whose command line names a file in `workDir`: a test's QEMUs. */
export async function processesIn(workDir: string): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    const cmdline = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
    const stat = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '');
    if (cmdline.includes(`${workDir}/`) && !/^\d+ \(.*\) Z/.test(stat)) pids.push(Number(entry));
  }
  return pids;
}

/** What `workDir` still holds: VM directories and the QEMUs running their files. */
export async function leftIn(workDir: string): Promise<{ entries: string[]; processes: number[] }> {
  const entries = await readdir(workDir).catch(() => []);
  return { entries, processes: await processesIn(workDir) };
}

/** The pid of the one VM's QEMU in `workDir` (read from its pidfile). */
export async function qemuPidIn(workDir: string): Promise<number> {
  const [vm, ...others] = (await readdir(workDir)).filter((entry) => entry.startsWith('mayfly-job-'));
  if (vm === undefined || others.length > 0) throw new Error(`expected one VM in ${workDir}, found ${[vm, ...others].join(', ')}`);
  return Number((await readFile(join(workDir, vm, 'qemu.pid'), 'utf8')).trim());
}
