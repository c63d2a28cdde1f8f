/**
 * What machine a job gets: `vm_type`, `vm_size` and `vm_config` turned into
 * a machine type, GPUs and disk size. The one table of sizes lives here.
 */
import type { StartAttributes } from '../../src/backend/kit.js';

/** GPUs attached to a VM. */
export interface GpuConfig {
  count: number;
  /** Accelerator type name, e.g. `nvidia-tesla-t4`. */
  type: string;
}

interface SizeEntry {
  machineType: string;
  gpu?: GpuConfig;
  /** Boot disk in GB, when the size needs more than `DISK_SIZE` (GPU images carry drivers and toolkits). */
  diskSizeGb?: number;
}

/** `vm_size` -> machine, as travis-ci/worker maps them (backend/gce.go `gceVMSizeMapping`, `GpuMapping`). */
export const VM_SIZES: Readonly<Record<string, SizeEntry>> = {
  medium: { machineType: 'n2-standard-2' },
  large: { machineType: 'n2-standard-4' },
  'x-large': { machineType: 'n2-standard-8' },
  '2x-large': { machineType: 'n2-standard-16' },
  'gpu-medium': { machineType: 'n1-standard-8', gpu: { count: 1, type: 'nvidia-tesla-t4' }, diskSizeGb: 300 },
  'gpu-xlarge': { machineType: 'n1-standard-8', gpu: { count: 1, type: 'nvidia-tesla-v100' }, diskSizeGb: 300 },
};

export interface MachineDefaults {
  machineType: string;
  premiumMachineType: string;
  diskSize: number;
  /** The type of `vm_config.gpu_count` GPUs when the job names none. */
  gpuType: string;
}

export interface Machine {
  machineType: string;
  /**
   * `vm_size` as travis' gce backend rewrites it for state updates: `premium`
   * for premium jobs, the machine type of a known non-GPU size, else the
   * job's own (undefined when it had none).
   */
  reportedVmSize?: string;
  /** Absent when the VM gets no GPU. */
  gpu?: GpuConfig;
  diskSizeGb: number;
}

/**
 * Premium jobs get the premium machine type; otherwise a known `vm_size`
 * picks the type (and GPUs); `vm_config.gpu_count` overrides the GPUs. A
 * job that asks for none gets none, whatever `GPU_COUNT` says (travis reads
 * that setting but never attaches it).
 */
export function machineFor(attributes: Pick<StartAttributes, 'vmType' | 'vmSize' | 'vmConfig'>, defaults: MachineDefaults): Machine {
  const size = attributes.vmSize === undefined ? undefined : VM_SIZES[attributes.vmSize];
  const premium = attributes.vmType === 'premium';
  const machineType = premium ? defaults.premiumMachineType : (size?.machineType ?? defaults.machineType);
  let gpu: GpuConfig | undefined = premium ? undefined : size?.gpu;
  const asked = attributes.vmConfig.gpuCount ?? 0;
  if (asked > 0) gpu = { count: asked, type: attributes.vmConfig.gpuType ?? gpu?.type ?? defaults.gpuType };
  const diskSizeGb = Math.max(defaults.diskSize, premium ? 0 : (size?.diskSizeGb ?? 0));
  const reportedVmSize = premium ? 'premium' : size !== undefined && size.gpu === undefined ? size.machineType : attributes.vmSize;
  return {
    machineType,
    ...(gpu === undefined ? {} : { gpu }),
    diskSizeGb,
    ...(reportedVmSize === undefined ? {} : { reportedVmSize }),
  };
}
