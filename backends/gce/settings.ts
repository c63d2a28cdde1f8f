/**
 * Settings of the `gce` backend (`TRAVIS_WORKER_GCE_<KEY>`), named and
 * defaulted as travis-ci/worker's backend/gce.go names them, plus the
 * endpoints that let an operator (or a test) point the backend elsewhere.
 */
import { checkImageSelectorType, checkUserName, endpointOptions, settingProblems, type SettingFamily, type SettingProblem, type SettingsSchema } from '../../src/backend/kit.js';
import { parseAccountJson } from './auth.js';
import { checkAliases } from './images.js';

export interface GceSettings {
  /** Project the job VMs live in; default: the metadata server's project when running on GCE. */
  projectId: string;
  /** Service-account key: a file path or the JSON text; empty = application default credentials. */
  accountJson: string;
  /** Zones to boot in, tried in turn on capacity/quota errors; default: this VM's zone on GCE, else `us-central1-a`. */
  zones: string[];
  /** Deprecated single zone (travis `ZONE`); `zones` wins. */
  zone: string;
  /** Region of a `subnetwork` given by name; default: each zone's region. */
  region: string;
  /**
   * Network name or URL; a name is in the project of a `subnetwork` URL, else
   * the job project. Default: with `subnetwork`, the subnetwork's; else, on
   * GCE, the worker VM's own network (and subnetwork, as when this names
   * that network); else `default`.
   */
  network: string;
  /** Subnetwork name (in the job project) or URL, used as given; a custom-mode VPC needs one. Empty: see `network`. */
  subnetwork: string;
  machineType: string;
  /** Machine type of `vm_type: premium` jobs. */
  premiumMachineType: string;
  /** Boot disk size, in GB. */
  diskSize: number;
  /** Project the images are listed from; empty = `projectId`. */
  imageProjectId: string;
  /** Regular expression of the default image name (URL-escaped allowed, e.g. `travis-ci-garnet-trusty.%2B`). */
  imageDefault: string;
  /** Names of `IMAGE_<ALIAS>` settings that are stable aliases (each must be set). */
  imageAliases: string[];
  /** `IMAGE_<KEY>` overrides (language, dist, group, os, alias), keys lower case. */
  images: Record<string, string>;
  preemptible: boolean;
  /** Give each VM an external address (`false` for NAT setups). */
  publicIp: boolean;
  /** Connect to the external address (when `publicIp`), else to the internal one. */
  publicIpConnect: boolean;
  /** Before the first poll of the insert operation, in ms. */
  bootPrePollSleep: number;
  /** Between polls of the insert operation and the instance, in ms. */
  bootPollSleep: number;
  /** Before the first poll of the delete operation, in ms. */
  stopPrePollSleep: number;
  /** Between polls of the delete operation, in ms. */
  stopPollSleep: number;
  /** Return as soon as the delete request is accepted, without waiting for it. */
  skipStopPoll: boolean;
  /** SSH connection attempts before the VM counts as unreachable. */
  uploadRetries: number;
  /** Pause between SSH connection attempts, in ms. */
  uploadRetrySleep: number;
  /** One SSH connection attempt, in ms. */
  sshDialTimeout: number;
  /** User the job logs in as (its key goes into the `ssh-keys` metadata and the startup script). */
  sshUser: string;
  /** travis' site (`org`, `com`): a network tag on every VM, as travis sets; empty = none. */
  travisSite: string;
  /** The VM powers itself off after the job's hard limit plus a margin, even if the worker is gone. */
  autoImplode: boolean;
  /** Accepted for travis env files and warned about: travis reads it but attaches no GPUs from it, nor does mayfly. */
  gpuCount: number;
  /** GPU type of a job's `vm_config.gpu_count` when it names none. */
  gpuType: string;
  /** API calls per `rateLimitDuration` (0 = unlimited). */
  rateLimitMaxCalls: number;
  /** In ms. */
  rateLimitDuration: number;
  /** Compute API base URL (scheme, host, optional port). */
  apiEndpoint: string;
  /** Metadata server `host[:port]`; empty = `$GCE_METADATA_HOST`, else `metadata.google.internal`. */
  metadataHost: string;
  /** travis' warmer service (`http[s]://[user:password@]host[:port]`); empty = none. Jobs whose payload says `warmer: true` ask it for a VM first. */
  warmerUrl: string;
  /** One request to the warmer, in ms (default 5 s, as travis). */
  warmerTimeout: number;
  /** Decrypts the SSH key the warmer hands over with a VM. */
  warmerSshPassphrase: string;
}

/** Keys filled by the config loader from `TRAVIS_WORKER_GCE_IMAGE_<NAME>`. */
export type GceFamilies = 'images';

export const DEFAULT_ZONE = 'us-central1-a';
export const DEFAULT_NETWORK = 'default';

export const settingsSchema: SettingsSchema<Omit<GceSettings, GceFamilies>> = {
  projectId: { doc: 'project the job VMs live in (default: the metadata server\'s project, when running on GCE)', format: String, default: '' },
  accountJson: {
    doc: 'service-account key, a file path or the JSON text (default: application default credentials)',
    format: String,
    default: '',
    sensitive: true,
  },
  zones: {
    doc: `comma-separated zones, tried in turn when one has no capacity or quota (default: this VM's zone on GCE, else ${DEFAULT_ZONE})`,
    format: 'list',
    default: [],
  },
  zone: { doc: 'deprecated: use ZONES', format: String, default: '' },
  region: { doc: 'region of a SUBNETWORK given by name (default: the zone\'s region)', format: String, default: '' },
  network: {
    doc: `network of the job VMs, a name or URL (default: SUBNETWORK's; else this worker VM's own network and subnetwork on GCE; else ${DEFAULT_NETWORK})`,
    format: String,
    default: '',
  },
  subnetwork: {
    doc: 'subnetwork of the job VMs, a name in the job project or a URL (a Shared VPC host project\'s), used as given; a custom-mode VPC needs one',
    format: String,
    default: '',
  },
  machineType: { doc: 'machine type of a job VM', format: String, default: 'n1-standard-2' },
  premiumMachineType: { doc: 'machine type of a vm_type: premium job', format: String, default: 'n1-standard-4' },
  diskSize: { doc: 'boot disk size in GB', format: 'nat', default: 20 },
  imageProjectId: { doc: 'project the images are listed from (default: PROJECT_ID)', format: String, default: '' },
  imageDefault: {
    doc: 'regular expression of the default image name, URL-escaped if needed (travis-ci-garnet-trusty.%2B); the newest match wins',
    format: String,
    default: 'travis-ci.+',
  },
  imageAliases: { doc: 'comma-separated aliases, each naming an IMAGE_<ALIAS> setting', format: 'list', default: [] },
  preemptible: { doc: 'boot preemptible VMs (a preempted job is requeued)', format: 'loose-boolean', default: false },
  publicIp: { doc: 'give each VM an external address (false for NAT)', format: 'loose-boolean', default: true },
  publicIpConnect: { doc: 'connect to the external address (if PUBLIC_IP), else the internal one', format: 'loose-boolean', default: true },
  bootPrePollSleep: { doc: "travis' sleep before checking the insert; accepted, no longer waited: the insert operation is awaited with zoneOperations.wait", format: 'duration', default: 15_000 },
  bootPollSleep: { doc: 'longest pause between checks of a VM whose insert is done but which is not RUNNING yet (pauses start at 100ms and double)', format: 'duration', default: 3_000 },
  stopPrePollSleep: { doc: "travis' sleep before checking the deletion; accepted, no longer waited: the delete operation is awaited with zoneOperations.wait", format: 'duration', default: 15_000 },
  stopPollSleep: { doc: "travis' sleep between checks of the deletion; accepted, no longer waited (zoneOperations.wait)", format: 'duration', default: 3_000 },
  skipStopPoll: { doc: 'return as soon as the deletion is requested, without waiting for it', format: Boolean, default: false },
  uploadRetries: { doc: 'SSH connection attempts before the VM counts as unreachable', format: 'nat', default: 120 },
  uploadRetrySleep: { doc: 'sleep between SSH connection attempts', format: 'duration', default: 1_000 },
  sshDialTimeout: { doc: 'time allowed for one SSH connection attempt', format: 'duration', default: 5_000 },
  sshUser: { doc: 'user the job logs in as (its key goes into the ssh-keys metadata and the startup script)', format: String, default: 'travis' },
  travisSite: { doc: 'travis site (org, com), added as a network tag to every VM', format: String, default: '' },
  autoImplode: { doc: 'VMs power themselves off after the job\'s hard limit plus a margin', format: Boolean, default: true },
  gpuCount: {
    doc: 'no effect, as in travis (a warning says so): VMs get GPUs only through the job\'s vm_size (gpu-*) or vm_config.gpu_count',
    format: 'nat',
    default: 0,
  },
  gpuType: { doc: 'GPU type for a job\'s vm_config.gpu_count without a type', format: String, default: 'nvidia-tesla-p100' },
  rateLimitMaxCalls: { doc: 'Compute API calls per RATE_LIMIT_DURATION (0 = unlimited)', format: 'nat', default: 10 },
  rateLimitDuration: { doc: 'interval of RATE_LIMIT_MAX_CALLS', format: 'duration', default: 1_000 },
  apiEndpoint: { doc: 'Compute API base URL', format: String, default: 'https://compute.googleapis.com', url: true },
  metadataHost: {
    doc: 'metadata server host[:port] (default: $GCE_METADATA_HOST, else metadata.google.internal)',
    format: String,
    default: '',
  },
  warmerUrl: {
    doc: "travis' warmer service: jobs whose payload says warmer ask it for a ready VM first, and boot their own when it has none (empty: off)",
    format: String,
    default: '',
    url: true,
  },
  warmerTimeout: { doc: 'time allowed for one request to the warmer service', format: 'duration', default: 5_000 },
  warmerSshPassphrase: { doc: 'passphrase of the encrypted SSH keys the warmer service hands over with its VMs', format: String, default: '', sensitive: true },
};

export const settingFamilies: Record<GceFamilies, SettingFamily> = {
  images: {
    prefix: 'IMAGE',
    doc: 'image name regular expression for jobs whose language, dist, group, os or alias is <NAME> (e.g. IMAGE_RUBY, IMAGE_DIST_XENIAL_RUBY)',
  },
};

/** GCE network tags: lower case letters, digits and `-`, starting with a letter, at most 63 characters (RFC 1035). */
const NETWORK_TAG = /^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$/;

function checkNetworkTag(tag: string): void {
  if (tag !== '' && !NETWORK_TAG.test(tag)) throw new Error(`"${tag}" is not a GCE network tag (lower case letters, digits and -, starting with a letter)`);
}

/** What the schema can't check (the backend's `validate` hook): every problem, keyed by setting. */
export function validateSettings(settings: GceSettings): SettingProblem[] {
  return settingProblems([
    ['accountJson', () => settings.accountJson.trim() !== '' && parseAccountJson(settings.accountJson)],
    ['apiEndpoint', () => endpointOptions(settings.apiEndpoint)],
    ['imageAliases', () => checkAliases(settings.imageAliases, settings.images)],
    ['imageSelectorType', () => checkImageSelectorType(settings.images)],
    ['sshUser', () => checkUserName(settings.sshUser)],
    ['travisSite', () => checkNetworkTag(settings.travisSite)],
    ['warmerUrl', () => settings.warmerUrl.trim() !== '' && endpointOptions(settings.warmerUrl)],
  ]);
}
