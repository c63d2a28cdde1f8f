/**
 * What machine a job gets: `vm_type`, `vm_size` and `vm_config` turned into
 * a machine type, GPUs and disk size. The one table of sizes lives here.
 */
import { PayloadError, type StartAttributes } from '../../src/backend/kit.js';

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
 * The GPUs GCE attaches to a VM by `guestAccelerators`, and only to N1
 * machine types (Compute Engine, "GPU machine types": T4, V100, P100 and P4,
 * with their virtual-workstation `-vws` variants, attach to N1 general-purpose
 * VMs; newer GPUs come built into accelerator-optimized machine types).
 */
export const N1_GPU_TYPES: ReadonlySet<string> = new Set([
  'nvidia-tesla-t4',
  'nvidia-tesla-t4-vws',
  'nvidia-tesla-v100',
  'nvidia-tesla-p100',
  'nvidia-tesla-p100-vws',
  'nvidia-tesla-p4',
  'nvidia-tesla-p4-vws',
]);

/** A predefined general-purpose type: family, kind and vCPUs, e.g. `n2-standard-4`. */
const PREDEFINED_TYPE = /^[a-z][a-z0-9]*-(standard|highmem|highcpu)-(\d+)$/;
/** The vCPU counts of N1's predefined types (Compute Engine, "N1 machine series"). */
const N1_VCPUS: ReadonlySet<number> = new Set([1, 2, 4, 8, 16, 32, 64, 96]);

/**
 * The N1 type of the same kind and size as `machineType`, for a VM with
 * GPUs: GCE refuses those GPUs on any other family (400), which would
 * fail the job the same way in every zone and on every retry.
 */
function n1MachineFor(machineType: string, gpu: GpuConfig): string {
  if (!N1_GPU_TYPES.has(gpu.type)) {
    throw new PayloadError(
      'vm_config.gpu_type',
      `GCE attaches only ${[...N1_GPU_TYPES].join(', ')} to a VM (on N1 machine types); ${gpu.type} comes built into its own machine types, which mayfly does not choose`,
    );
  }
  const [, kind, vcpus] = PREDEFINED_TYPE.exec(machineType) ?? [];
  if (kind === undefined || !N1_VCPUS.has(Number(vcpus))) {
    throw new PayloadError('vm_config.gpu_count', `GPUs attach only to N1 machine types, and ${machineType} has no N1 type of the same size`);
  }
  return `n1-${kind}-${vcpus}`;
}

/**
 * Premium jobs get the premium machine type; otherwise a known `vm_size`
 * picks the type (and GPUs); `vm_config.gpu_count` overrides the GPUs, and
 * a VM with GPUs gets the N1 type of the same size. Throws `PayloadError`
 * for GPUs GCE cannot attach. A
 * job that asks for none gets none, whatever `GPU_COUNT` says (travis reads
 * that setting but never attaches it).
 */
export function machineFor(attributes: Pick<StartAttributes, 'vmType' | 'vmSize' | 'vmConfig'>, defaults: MachineDefaults): Machine {
  const size = attributes.vmSize === undefined ? undefined : VM_SIZES[attributes.vmSize];
  const premium = attributes.vmType === 'premium';
  let gpu: GpuConfig | undefined = premium ? undefined : size?.gpu;
  const asked = attributes.vmConfig.gpuCount ?? 0;
  if (asked > 0) gpu = { count: asked, type: attributes.vmConfig.gpuType ?? gpu?.type ?? defaults.gpuType };
  const chosen = premium ? defaults.premiumMachineType : (size?.machineType ?? defaults.machineType);
  const machineType = gpu === undefined ? chosen : n1MachineFor(chosen, gpu);
  const diskSizeGb = Math.max(defaults.diskSize, premium ? 0 : (size?.diskSizeGb ?? 0));
  const reportedVmSize = premium ? 'premium' : size !== undefined && size.gpu === undefined ? machineType : attributes.vmSize;
  return {
    machineType,
    ...(gpu === undefined ? {} : { gpu }),
    diskSizeGb,
    ...(reportedVmSize === undefined ? {} : { reportedVmSize }),
  };
}
