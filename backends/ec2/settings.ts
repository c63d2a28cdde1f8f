/**
 * Settings of the `ec2` backend (`TRAVIS_WORKER_EC2_<KEY>`), named and
 * defaulted as travis-ci/worker's backend/ec2.go names them where it has
 * them, and turning the operator's text (custom tags, user data) into what
 * the backend uses.
 */
import { checkImageSelectorType, checkUserName, generateJobKeyPair, settingProblems, type SettingProblem, type SettingsSchema } from '../../src/backend/kit.js';
import { buildUserData } from './user-data.js';

export interface Ec2Settings {
  /** AWS region; default `eu-west-1` (travis' default). */
  region: string;
  /** EC2 API endpoint URL (a VPC endpoint, a test fake); empty = the region's public endpoint. */
  endpoint: string;
  /** Static credentials; both empty = the SDK's default chain (environment, profile, instance role). */
  awsAccessKeyId: string;
  awsSecretAccessKey: string;
  /** Subnet to launch into; empty = the default subnet of the default VPC. */
  subnetId: string;
  /** Security group ids; empty = the VPC's default group. */
  securityGroupIds: string[];
  /** Instance type when the job asks for no `vm_size`; default `t2.micro` (travis). */
  instanceType: string;
  /** Instance type of an `arm64` job that asks for no `vm_size`: an arm64 AMI boots only on Graviton; default `t4g.micro`. */
  instanceTypeArm64: string;
  ebsOptimized: boolean;
  /** Root volume size in GiB; default 100 (travis). */
  diskSize: number;
  /** AMI id (`ami-...`) or AMI name filter (`*` and `?` wildcards) used when no `IMAGE_<NAME>` matches. */
  imageDefault: string;
  /** `TRAVIS_WORKER_EC2_IMAGE_<NAME>`, keyed by lower-case name: AMI ids or name filters (filled by the loader). */
  images: Record<string, string>;
  /** Owners whose AMIs a name filter may pick (account ids, `self`, `amazon`); default `self`. */
  imageOwners: string[];
  /** The user the job runs as and the worker logs in as; default `travis` (travis' images). */
  sshUser: string;
  /**
   * An existing EC2 key pair for the image's admin user (login access for
   * operators), sent as RunInstances' `KeyName`, as travis does; the worker
   * still reaches the job as `sshUser` with the job's own key. Empty = none.
   */
  keyName: string;
  /** What runs the uploaded script (`build.sh` in the user's home) over SSH; default travis' `bash ~/build.sh`. */
  execCmd: string;
  /** Extra user data, base64 (RFC 4648, standard or URL-safe alphabet): shell text or `#cloud-config`. */
  userData: string;
  /** `key=value,key2=value2`: extra tags on every instance and volume. */
  customTags: string;
  /** Give instances a public IP (only decides anything when SUBNET_ID is set); default true. */
  publicIp: boolean;
  /** Connect to the public IP when there is one, else the private IP; default true. */
  publicIpConnect: boolean;
  /** SSH connection attempts while waiting for the instance; default 120 (travis). */
  uploadRetries: number;
  /** Pause between SSH connection attempts, in ms; default 1 s (travis). */
  uploadRetrySleep: number;
  /** Time allowed for one SSH connection attempt, in ms; default 5 s (travis). */
  sshDialTimeout: number;
  /** Launch spot instances instead of on-demand ones; an interrupted job is requeued. */
  spot: boolean;
  /** Highest hourly price for a spot instance, in USD (e.g. `0.05`); empty = the on-demand price. */
  spotMaxPrice: string;
  /** At most this many EC2 API calls per RATE_LIMIT_DURATION, per worker (0 = no limit); default 10. */
  rateLimitMaxCalls: number;
  /** In ms; default 1 s. */
  rateLimitDuration: number;
  /** Pause between state checks while an instance boots or terminates, in ms; default 2 s. */
  bootPollSleep: number;
  /** How often a running job's instance is checked for a spot interruption or a stop by AWS, in ms (0 = never); default 15 s. */
  interruptionPollSleep: number;
  /** The instance powers itself off (and so terminates) once the job's hard limit plus a margin has passed, even if the worker is gone. */
  autoImplode: boolean;
}

/** Families of settings, keyed by the property that receives them. */
export type Ec2SettingFamilies = 'images';

const BASE64 = /^[A-Za-z0-9+/_-]*={0,2}$/;

export const settingsSchema: SettingsSchema<Omit<Ec2Settings, Ec2SettingFamilies>> = {
  region: { doc: 'AWS region to run job instances in', format: String, default: 'eu-west-1' },
  endpoint: {
    doc: 'EC2 API endpoint URL, e.g. a VPC interface endpoint; empty = the public endpoint of REGION',
    format: String,
    default: '',
    url: true,
  },
  awsAccessKeyId: {
    doc: 'AWS access key id; empty = the SDK default credential chain (instance role)',
    format: String,
    default: '',
    sensitive: true,
  },
  awsSecretAccessKey: { doc: 'AWS secret access key', format: String, default: '', sensitive: true },
  subnetId: { doc: 'subnet to launch instances into; empty = the default subnet', format: String, default: '' },
  securityGroupIds: {
    doc: 'comma-separated security group ids; empty = the default group of the VPC',
    format: 'list',
    default: [],
  },
  instanceType: { doc: 'instance type for jobs that ask for no vm_size', format: String, default: 't2.micro' },
  // t2.micro's Graviton counterpart: EC2 refuses an arm64 AMI on an x86 type.
  instanceTypeArm64: { doc: 'instance type for arm64 jobs that ask for no vm_size (an arm64 AMI needs a Graviton type)', format: String, default: 't4g.micro' },
  ebsOptimized: { doc: 'launch EBS-optimized instances', format: 'loose-boolean', default: false },
  diskSize: { doc: 'root volume size in GiB', format: 'nat', default: 100 },
  imageDefault: {
    doc: 'AMI id (ami-...) or AMI name filter (* and ? wildcards, newest match wins) when no IMAGE_<NAME> matches',
    format: String,
    default: '',
  },
  imageOwners: {
    doc: 'comma-separated owners (account ids, self, amazon) whose AMIs a name filter may pick',
    format: 'list',
    default: ['self'],
  },
  sshUser: { doc: 'user the job runs as (its authorized key is set in user data)', format: String, default: 'travis' },
  keyName: {
    doc: "existing key pair for the image's admin user (operators' login); the job is still reached with its own key",
    format: String,
    default: '',
  },
  execCmd: { doc: 'command that runs the uploaded script (build.sh in the home directory) over SSH', format: String, default: 'bash ~/build.sh' },
  userData: {
    doc: 'extra user data, base64: shell text appended to the key setup, or #cloud-config sent alongside it',
    format: String,
    default: '',
  },
  customTags: { doc: 'extra tags for every instance: key1=value1,key2=value2', format: String, default: '' },
  publicIp: { doc: 'boot instances with a public IP (with SUBNET_ID; disable for NAT)', format: 'loose-boolean', default: true },
  publicIpConnect: { doc: "connect to the instance's public IP when it has one", format: 'loose-boolean', default: true },
  uploadRetries: { doc: 'SSH connection attempts while waiting for an instance', format: 'nat', default: 120 },
  uploadRetrySleep: { doc: 'pause between SSH connection attempts', format: 'duration', default: 1_000 },
  sshDialTimeout: { doc: 'time allowed for one SSH connection attempt', format: 'duration', default: 5_000 },
  spot: { doc: 'launch spot instances; a job whose instance is interrupted is run again', format: Boolean, default: false },
  spotMaxPrice: { doc: 'highest hourly spot price in USD, at least 0.001; empty = the on-demand price', format: String, default: '' },
  rateLimitMaxCalls: { doc: 'EC2 API calls allowed per RATE_LIMIT_DURATION (0 = no limit)', format: 'nat', default: 10 },
  rateLimitDuration: { doc: 'window of RATE_LIMIT_MAX_CALLS', format: 'duration', default: 1_000 },
  bootPollSleep: { doc: 'pause between state checks while an instance boots or terminates', format: 'duration', default: 2_000 },
  interruptionPollSleep: {
    doc: "how often a running job's instance is checked for a spot interruption or a stop by AWS (0 = never)",
    format: 'duration',
    default: 15_000,
  },
  autoImplode: {
    doc: 'instances power themselves off (and terminate) after the job hard limit plus a margin, even if the worker is gone',
    format: Boolean,
    default: true,
  },
};

export const settingFamilies = {
  images: {
    prefix: 'IMAGE',
    doc: 'AMI id or AMI name filter for jobs of language <NAME> (or dist/group/os keys as travis reads them)',
  },
} as const;

/** A tag to put on instances and volumes. */
export interface Tag {
  Key: string;
  Value: string;
}

/** EC2's limits on user tags (keys up to 128 characters, values up to 256; `aws:` is reserved). */
const TAG_KEY_MAX = 128;
const TAG_VALUE_MAX = 256;

/** `k=v,k2=v2` -> tags. Throws an `Error` quoting a malformed entry. */
export function parseCustomTags(text: string): Tag[] {
  const tags: Tag[] = [];
  for (const entry of text.split(',').map((item) => item.trim()).filter((item) => item !== '')) {
    const at = entry.indexOf('=');
    const key = at < 0 ? '' : entry.slice(0, at).trim();
    const value = at < 0 ? '' : entry.slice(at + 1).trim();
    if (key === '' || key.length > TAG_KEY_MAX || value.length > TAG_VALUE_MAX || key.toLowerCase().startsWith('aws:')) {
      throw new Error(`"${entry}" is not key=value (key 1-${TAG_KEY_MAX} characters, not starting with aws:, value up to ${TAG_VALUE_MAX})`);
    }
    tags.push({ Key: key, Value: value });
  }
  return tags;
}

/** USER_DATA decoded; travis documents URL-safe base64 without padding, the standard alphabet is accepted too. */
export function decodeUserData(text: string): string {
  const trimmed = text.trim();
  if (trimmed === '') return '';
  if (!BASE64.test(trimmed)) throw new Error('is not base64 (RFC 4648)');
  return Buffer.from(trimmed.replaceAll('-', '+').replaceAll('_', '/'), 'base64').toString('utf8');
}

/** What the schema can't check (the backend's `validate` hook): every problem, keyed by setting. */
export function validateSettings(settings: Ec2Settings): SettingProblem[] {
  const problems: SettingProblem[] = [];
  if (settings.awsAccessKeyId !== '' && settings.awsSecretAccessKey === '') {
    problems.push({ setting: 'awsSecretAccessKey', problem: unpaired('TRAVIS_WORKER_EC2_AWS_ACCESS_KEY_ID') });
  }
  if (settings.awsAccessKeyId === '' && settings.awsSecretAccessKey !== '') {
    problems.push({ setting: 'awsAccessKeyId', problem: unpaired('TRAVIS_WORKER_EC2_AWS_SECRET_ACCESS_KEY') });
  }
  if (settings.endpoint !== '' && !URL.canParse(settings.endpoint)) {
    problems.push({ setting: 'endpoint', problem: 'is not a URL (e.g. https://ec2.eu-west-1.amazonaws.com)' });
  }
  if (settings.execCmd.trim() === '') problems.push({ setting: 'execCmd', problem: 'is empty: name the command that runs the script' });
  return problems.concat(
    settingProblems([
      ['sshUser', () => checkUserName(settings.sshUser)],
      ['imageSelectorType', () => checkImageSelectorType(settings.images)],
      ['customTags', () => parseCustomTags(settings.customTags)],
      ['spotMaxPrice', () => checkSpotMaxPrice(settings.spotMaxPrice)],
      // USER_DATA that can't be combined with the key script, or is too large with it, would fail every job.
      ['userData', () => buildUserData({ publicKey: generateJobKeyPair().publicKey, user: settings.sshUser, extra: decodeUserData(settings.userData), implodeAfterMinutes: 0 })],
    ]),
  );
}

/**
 * The lowest spot `MaxPrice` EC2 takes, in USD per hour: below it a launch
 * is refused with InvalidParameterValue (EC2 API reference, SpotMarketOptions
 * and LaunchTemplateSpotMarketOptions, "MaxPrice").
 */
export const SPOT_MIN_PRICE = 0.001;
/** A price as EC2 writes one: digits with an optional decimal fraction, no sign, exponent or currency. */
const DECIMAL_PRICE = /^\d+(\.\d+)?$/;

/** SPOT_MAX_PRICE as EC2 would take it: empty (the on-demand price), or a decimal of at least `SPOT_MIN_PRICE`. */
export function checkSpotMaxPrice(price: string): void {
  if (price === '') return;
  if (!DECIMAL_PRICE.test(price)) throw new Error(`"${price}" is not a price in USD per hour such as 0.05`);
  if (Number(price) < SPOT_MIN_PRICE) throw new Error(`"${price}" is below ${SPOT_MIN_PRICE}, the lowest spot price EC2 takes (USD per hour)`);
}

/** The static credentials go together. */
function unpaired(other: string): string {
  return `is not set, but ${other} is: the two go together (set both, or neither to use the instance role)`;
}
