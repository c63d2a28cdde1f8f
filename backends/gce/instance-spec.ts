/**
 * The Compute `Instance` resource of one job's VM: name, labels, machine,
 * boot disk, network tags, scheduling, and the metadata that carries the
 * job's SSH key (twice: `ssh-keys` and the startup script) and the
 * self-destruct timer.
 */
import { randomUUID } from 'node:crypto';
import { startupScript, type StartAttributes } from '../../src/backend/kit.js';
import type { GceInstanceResource } from './api.js';
import type { Machine } from './machine.js';

/**
 * How long past the job's hard limit its VM may live: the worker needs a
 * moment to report and delete it; travis-ci/worker powers off after the
 * hard limit plus 10 minutes.
 */
export const LEASE_MARGIN_MS = 10 * 60_000;
/** The labels of a job VM; a VM carrying the job, worker and lease ones was made by mayfly (travis-ci/worker sets none). */
export const LABELS = {
  jobId: 'travis-job-id',
  repository: 'travis-repository',
  worker: 'travis-worker',
  /** Seconds since the epoch. */
  leaseExpiry: 'travis-lease-expiry',
} as const;

/** GCE label keys and values: at most 63 characters (cloud.google.com/compute/docs/labeling-resources). */
const LABEL_MAX = 63;

/** `travis-job-<uuid>`: unique per start, a valid instance name (lower case, starts with a letter, <= 63 chars). */
export function instanceName(): string {
  return `travis-job-${randomUUID()}`;
}

/** A label value: lower case letters, digits, `_` and `-` only, at most 63 characters. */
export function labelValue(text: string): string {
  return text
    .toLowerCase()
    .replace(/[^a-z0-9_-]+/g, '-')
    .slice(0, LABEL_MAX);
}

export interface InstanceSpecInput {
  name: string;
  zone: string;
  projectId: string;
  /** The interface's network URL; undefined: the subnetwork's. */
  network: string | undefined;
  /** The interface's subnetwork URL; undefined: none named. */
  subnetwork: string | undefined;
  machine: Machine;
  /** `selfLink` of the boot image. */
  sourceImage: string;
  attributes: Pick<StartAttributes, 'jobId' | 'repository' | 'language' | 'hardTimeoutMs'>;
  workerHost: string;
  /** The build user: its key goes into the `ssh-keys` metadata and the startup script. */
  sshUser: string;
  publicKey: string;
  /** travis' site (`org`, `com`), added as a network tag; empty = none. */
  site: string;
  preemptible: boolean;
  publicIp: boolean;
  autoImplode: boolean;
  /** When the VM is being created (ms since the epoch), for the lease label. */
  now: number;
}

/** Region of a zone: `us-central1-b` -> `us-central1`. */
export function regionOf(zone: string): string {
  return zone.replace(/-[a-z]$/, '');
}

/** Minutes from boot after which the VM powers itself off: the job's hard limit plus the margin. */
export function implodeMinutes(hardTimeoutMs: number): number {
  return Math.ceil((hardTimeoutMs + LEASE_MARGIN_MS) / 60_000);
}

export function instanceSpec(input: InstanceSpecInput): GceInstanceResource {
  const { machine, zone } = input;
  const leaseExpiry = Math.ceil((input.now + input.attributes.hardTimeoutMs + LEASE_MARGIN_MS) / 1000);
  const items = [
    // Both ways in: the guest agent reads ssh-keys; travis' images, which may lack it, run the startup script.
    { key: 'ssh-keys', value: `${input.sshUser}:${input.publicKey.trim()}` },
    // Only the job's key: keys set project-wide must not open this VM.
    { key: 'block-project-ssh-keys', value: 'true' },
    // With OS Login on for the project, the guest agent ignores ssh-keys and
    // lets in only IAM users: the job's key would open nothing.
    { key: 'enable-oslogin', value: 'FALSE' },
    {
      key: 'startup-script',
      value: startupScript({
        user: input.sshUser,
        publicKey: input.publicKey,
        ...(input.autoImplode ? { powerOffAfterMinutes: implodeMinutes(input.attributes.hardTimeoutMs) } : {}),
      }),
    },
  ];
  const tags = input.publicIp ? ['testing'] : ['testing', 'no-ip'];
  // travis tags the VM with its site (TRAVIS_SITE), which firewall rules may select on.
  if (input.site !== '') tags.push(input.site);
  const gpu = machine.gpu;
  return {
    name: input.name,
    description: `Travis CI ${input.attributes.language} test VM`,
    machineType: `zones/${zone}/machineTypes/${machine.machineType}`,
    labels: {
      [LABELS.jobId]: String(input.attributes.jobId),
      [LABELS.repository]: labelValue(input.attributes.repository),
      [LABELS.worker]: labelValue(input.workerHost),
      // Seconds since the epoch: the reaper deletes VMs whose lease has passed.
      [LABELS.leaseExpiry]: String(leaseExpiry),
    },
    tags: { items: tags },
    metadata: { items },
    disks: [
      {
        type: 'PERSISTENT',
        mode: 'READ_WRITE',
        boot: true,
        autoDelete: true,
        initializeParams: {
          sourceImage: input.sourceImage,
          diskType: `zones/${zone}/diskTypes/pd-ssd`,
          diskSizeGb: machine.diskSizeGb,
        },
      },
    ],
    networkInterfaces: [
      {
        ...(input.network === undefined ? {} : { network: input.network }),
        ...(input.subnetwork === undefined ? {} : { subnetwork: input.subnetwork }),
        ...(input.publicIp ? { accessConfigs: [{ name: 'External NAT', type: 'ONE_TO_ONE_NAT' }] } : {}),
      },
    ],
    scheduling: {
      preemptible: input.preemptible,
      automaticRestart: false,
      // GPUs can't live-migrate, and preemptible VMs must terminate on maintenance.
      onHostMaintenance: gpu !== undefined || input.preemptible ? 'TERMINATE' : 'MIGRATE',
      // GCE itself deletes the VM (disk included) once the job's hard limit and
      // the margin have passed, even if no worker is left: the startup
      // script's power-off only stops it, and a stopped VM's disk still costs.
      ...(input.autoImplode
        ? { maxRunDuration: { seconds: implodeMinutes(input.attributes.hardTimeoutMs) * 60 }, instanceTerminationAction: 'DELETE' }
        : {}),
    },
    guestAccelerators:
      gpu === undefined
        ? []
        : [{ acceleratorCount: gpu.count, acceleratorType: `projects/${input.projectId}/zones/${zone}/acceleratorTypes/${gpu.type}` }],
  };
}
