/**
 * Settings that point the gce backend at a `FakeGce`: as a settings object
 * (for `definition.create`) and as environment variables (for a whole
 * worker), with every sleep at zero so tests run fast; and the metadata a
 * host in a managed instance group reads.
 */
import { userInfo } from 'node:os';
import type { GceSettings } from '../../backends/gce/settings.js';
import type { FakeGce } from './gce-server.js';

export const TEST_ZONES = ['us-central1-a', 'us-central1-b'];

export function gceSettings(fake: FakeGce, overrides: Partial<GceSettings> = {}): GceSettings {
  return {
    projectId: fake.project,
    accountJson: fake.accountJson,
    zones: TEST_ZONES,
    zone: '',
    region: '',
    network: 'default',
    subnetwork: '',
    machineType: 'n1-standard-2',
    premiumMachineType: 'n1-standard-4',
    diskSize: 20,
    imageProjectId: '',
    imageDefault: 'travis-ci.+',
    imageAliases: [],
    images: {},
    preemptible: false,
    publicIp: true,
    publicIpConnect: true,
    bootPrePollSleep: 0,
    bootPollSleep: 20,
    stopPrePollSleep: 0,
    stopPollSleep: 20,
    skipStopPoll: false,
    uploadRetries: 50,
    uploadRetrySleep: 100,
    sshDialTimeout: 5_000,
    // The fake's sshd lets the test process's own user in.
    sshUser: userInfo().username,
    travisSite: '',
    autoImplode: true,
    gpuCount: 0,
    gpuType: 'nvidia-tesla-p100',
    rateLimitMaxCalls: 0,
    rateLimitDuration: 1_000,
    apiEndpoint: fake.endpoint,
    // Never the real metadata server: the fake answers (404 unless told otherwise).
    metadataHost: fake.host,
    warmerUrl: '',
    warmerTimeout: 5_000,
    warmerSshPassphrase: '',
    ...overrides,
  };
}

/** `TRAVIS_WORKER_GCE_*` for a worker using `fake`; `extra` adds or overrides variables. */
export function gceEnv(fake: FakeGce, extra: Record<string, string> = {}): Record<string, string> {
  return {
    TRAVIS_WORKER_PROVIDER_NAME: 'gce',
    TRAVIS_WORKER_GCE_PROJECT_ID: fake.project,
    TRAVIS_WORKER_GCE_ACCOUNT_JSON: fake.accountJson,
    TRAVIS_WORKER_GCE_ZONES: TEST_ZONES.join(','),
    TRAVIS_WORKER_GCE_NETWORK: 'default',
    TRAVIS_WORKER_GCE_API_ENDPOINT: fake.endpoint,
    TRAVIS_WORKER_GCE_METADATA_HOST: fake.host,
    TRAVIS_WORKER_GCE_SSH_USER: userInfo().username,
    TRAVIS_WORKER_GCE_BOOT_PRE_POLL_SLEEP: '0s',
    TRAVIS_WORKER_GCE_BOOT_POLL_SLEEP: '20ms',
    TRAVIS_WORKER_GCE_STOP_PRE_POLL_SLEEP: '0s',
    TRAVIS_WORKER_GCE_STOP_POLL_SLEEP: '20ms',
    TRAVIS_WORKER_GCE_UPLOAD_RETRY_SLEEP: '100ms',
    TRAVIS_WORKER_GCE_RATE_LIMIT_MAX_CALLS: '0',
    ...extra,
  };
}

/** An image list like travis' (names end in a timestamp). */
export function travisImages(): { name: string; creationTimestamp: string }[] {
  return [
    { name: 'travis-ci-garnet-trusty-1512508224-986baf0', creationTimestamp: '2017-12-05T13:10:24.000-08:00' },
    { name: 'travis-ci-sugilite-trusty-1512508225-986baf0', creationTimestamp: '2017-12-05T13:10:25.000-08:00' },
  ];
}

/**
 * Run the worker on host `instanceName`, a VM of the fake on the project's
 * default network and a member of the zonal managed group `group` (what its
 * `created-by` attribute says).
 */
export function placeManagedHost(fake: FakeGce, zone: string, instanceName: string, group = 'mayfly-fleet'): void {
  const region = zone.slice(0, zone.lastIndexOf('-'));
  fake.workerVm({
    name: instanceName,
    zone,
    network: `https://www.googleapis.com/compute/v1/projects/${fake.project}/global/networks/default`,
    subnetwork: `https://www.googleapis.com/compute/v1/projects/${fake.project}/regions/${region}/subnetworks/default`,
    createdBy: `projects/123456789/zones/${zone}/instanceGroupManagers/${group}`,
  });
}
