/**
 * The QEMU command line of one job's VM, built from the settings and what
 * start chose for it (cores, port or tap address, files). Pure, so what a
 * mode asks of QEMU can be read and tested without running it.
 *
 * - `-no-reboot`, and a pvpanic device with `-action panic=exit-failure`:
 *   a guest that reboots or panics ends QEMU, which the backend notices at
 *   once (the child exits); the panic is a QMP event first.
 * - QMP runs on QEMU's stdin/stdout (`-qmp stdio`): a pipe pair owned by the
 *   worker, so there is no socket file to wait for, guard or leave behind.
 * - `-pidfile` and `-name` carry the VM's name, which carries the job's:
 *   the reaper finds what a killed worker left by them.
 */
import { join } from 'node:path';

/** The files of one VM, all inside its own directory. */
export interface VmFiles {
  dir: string;
  overlay: string;
  seed: string;
  pidfile: string;
  console: string;
  lease: string;
}

export function vmFiles(dir: string): VmFiles {
  return {
    dir,
    overlay: join(dir, 'disk.qcow2'),
    seed: join(dir, 'seed.img'),
    pidfile: join(dir, 'qemu.pid'),
    console: join(dir, 'console.log'),
    lease: join(dir, 'lease.json'),
  };
}

/** How the VM reaches the network. */
export type VmNetwork =
  /** User-mode networking, the guest's port 22 forwarded to this loopback port; nothing else gets in, nothing gets out but replies (`restrict=on`). */
  | { mode: 'user'; sshPort: number }
  /** A tap on the operator's bridge (qemu-bridge-helper), the guest's NIC with this MAC. */
  | { mode: 'bridge'; bridge: string; mac: string };

export interface VmCommand {
  name: string;
  files: VmFiles;
  accel: 'kvm' | 'tcg';
  cpus: number;
  /** Host cores (a cpuset: `0,1`) the VM is pinned to. */
  cpuset: string;
  memory: string;
  network: VmNetwork;
  /** Direct-kernel boot; undefined = the image's own boot loader. */
  kernel: { kernel: string; initrd: string; append: string } | undefined;
}

/** The guest's address the loopback forward leads to (user mode's host side). */
export const LOOPBACK = '127.0.0.1';

/** `[command, ...args]`: QEMU under `taskset`, which pins it (every thread it starts) to the VM's cores. */
export function qemuCommand(binary: string, vm: VmCommand): string[] {
  const { files } = vm;
  const args = [
    'taskset',
    '--cpu-list',
    vm.cpuset,
    binary,
    '-name',
    `${vm.name},process=${vm.name}`,
    '-accel',
    vm.accel,
    // KVM: the host's CPU as it is; TCG: QEMU's default model, which it can emulate.
    ...(vm.accel === 'kvm' ? ['-cpu', 'host'] : []),
    '-smp',
    String(vm.cpus),
    '-m',
    vm.memory,
    '-nodefaults',
    '-display',
    'none',
    '-no-reboot',
    '-qmp',
    'stdio',
    '-pidfile',
    files.pidfile,
    '-serial',
    `file:${files.console}`,
    '-device',
    'pvpanic',
    // A guest that panics without rebooting itself (stock kernels wait for ever) ends QEMU too.
    '-action',
    'panic=exit-failure',
    '-drive',
    // The overlay dies with the VM: flushing it to the host's disk would only cost time.
    `file=${files.overlay},if=virtio,format=qcow2,cache=unsafe,discard=unmap`,
    '-drive',
    `file=${files.seed},if=virtio,format=raw,readonly=on`,
    ...networkArgs(vm.network),
  ];
  if (vm.kernel !== undefined) {
    args.push('-kernel', vm.kernel.kernel, '-append', vm.kernel.append);
    if (vm.kernel.initrd !== '') args.push('-initrd', vm.kernel.initrd);
  }
  return args;
}

function networkArgs(network: VmNetwork): string[] {
  if (network.mode === 'user') {
    return ['-netdev', `user,id=n0,restrict=on,hostfwd=tcp:${LOOPBACK}:${network.sshPort}-:22`, '-device', 'virtio-net-pci,netdev=n0'];
  }
  return ['-netdev', `bridge,id=n0,br=${network.bridge}`, '-device', `virtio-net-pci,netdev=n0,mac=${network.mac}`];
}
