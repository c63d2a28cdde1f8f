import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { classifyGceError, GceOperationError } from '../../backends/gce/errors.js';
import { checkAliases, imagePattern, newestImage } from '../../backends/gce/images.js';
import { implodeMinutes, labelValue, regionOf } from '../../backends/gce/instance-spec.js';
import { machineFor } from '../../backends/gce/machine.js';
import { endpointOptions } from '../../src/util/google-endpoint.js';
import { parseAccountJson } from '../../backends/gce/auth.js';
import { resolveJobNetwork } from '../../backends/gce/network.js';
import { usesVmCredentials } from '../../backends/gce/scopes.js';
import { definition } from '../../backends/gce/index.js';
import { configErrorOf } from '../helpers/config-error.js';
import { loadConfig } from '../../src/config/load.js';
import { echoConfig } from '../../src/config/echo.js';

const defaults = { machineType: 'n1-standard-2', premiumMachineType: 'n1-standard-4', diskSize: 20, gpuType: 'nvidia-tesla-p100' };

describe('gce machine table', () => {
  it.each([
    [{ vmType: 'default', vmConfig: {} }, { machineType: 'n1-standard-2', diskSizeGb: 20 }],
    [{ vmType: 'premium', vmSize: 'large', vmConfig: {} }, { machineType: 'n1-standard-4', diskSizeGb: 20, reportedVmSize: 'premium' }],
    [{ vmType: 'default', vmSize: 'x-large', vmConfig: {} }, { machineType: 'n2-standard-8', diskSizeGb: 20, reportedVmSize: 'n2-standard-8' }],
    [{ vmType: 'default', vmSize: 'unknown', vmConfig: {} }, { machineType: 'n1-standard-2', diskSizeGb: 20, reportedVmSize: 'unknown' }],
    [
      { vmType: 'default', vmSize: 'gpu-xlarge', vmConfig: {} },
      { machineType: 'n1-standard-8', gpu: { count: 1, type: 'nvidia-tesla-v100' }, diskSizeGb: 300, reportedVmSize: 'gpu-xlarge' },
    ],
    [
      { vmType: 'default', vmConfig: { gpuCount: 2, gpuType: 'nvidia-tesla-t4' } },
      { machineType: 'n1-standard-2', gpu: { count: 2, type: 'nvidia-tesla-t4' }, diskSizeGb: 20 },
    ],
    [
      { vmType: 'default', vmSize: '2x-large', vmConfig: { gpuCount: 1 } },
      { machineType: 'n1-standard-16', gpu: { count: 1, type: 'nvidia-tesla-p100' }, diskSizeGb: 20, reportedVmSize: 'n1-standard-16' },
    ],
    [{ vmType: 'default', vmConfig: { gpuCount: 1 } }, { machineType: 'n1-standard-2', gpu: { count: 1, type: 'nvidia-tesla-p100' }, diskSizeGb: 20 }],
  ])('maps %j', (attributes, machine) => {
    expect(machineFor(attributes, defaults)).toEqual(machine);
  });

  it('refuses GPUs GCE does not attach, and GPUs on a machine type with no N1 of its size, naming the field', () => {
    expect(() => machineFor({ vmType: 'default', vmConfig: { gpuCount: 1, gpuType: 'nvidia-l4' } }, defaults)).toThrow(
      expect.objectContaining({ field: 'vm_config.gpu_type' }),
    );
    expect(() => machineFor({ vmType: 'default', vmConfig: { gpuCount: 1 } }, { ...defaults, machineType: 'e2-medium' })).toThrow(
      expect.objectContaining({ field: 'vm_config.gpu_count', message: expect.stringContaining('e2-medium') }),
    );
  });
});

describe('gce error classifier', () => {
  const api = (code: number, reason: string): Error & { status: number } =>
    Object.assign(new Error(JSON.stringify({ error: { code, message: 'x', errors: [{ reason }] } })), { status: code });

  it.each([
    [api(429, 'rateLimitExceeded'), 'throttled'],
    [api(403, 'rateLimitExceeded'), 'throttled'],
    [api(403, 'userRateLimitExceeded'), 'throttled'],
    [api(403, 'quotaExceeded'), 'quota'],
    [api(503, 'backendError'), 'transient'],
    [api(500, 'internalError'), 'transient'],
    [api(404, 'notFound'), 'not-found'],
    [api(400, 'invalid'), 'fatal'],
    [api(401, 'authError'), 'fatal'],
    [Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }), 'transient'],
    [new GceOperationError('op', ['ZONE_RESOURCE_POOL_EXHAUSTED'], 'no room'), 'capacity'],
    [new GceOperationError('op', ['QUOTA_EXCEEDED'], 'no quota'), 'quota'],
    [new GceOperationError('op', ['INVALID_FIELD_VALUE'], 'bad'), 'fatal'],
  ])('%s -> %s', (error, kind) => {
    expect(classifyGceError(error)).toBe(kind);
  });
});

describe('gce images', () => {
  const job = { language: 'ruby', dist: 'xenial', group: 'stable', os: 'linux' };

  it('picks IMAGE_<KEY>, follows an alias once, falls back to the default as loaded (not URL-decoded twice), and honours image_name (URL-decoded)', () => {
    expect(imagePattern(job, {}, 'travis-ci-garnet-trusty.+')).toBe('travis-ci-garnet-trusty.+');
    // The loader unescaped `%252B` to `%2B` already: the pattern means those three characters.
    expect(imagePattern(job, {}, 'release-%2B-.+')).toBe('release-%2B-.+');
    expect(imagePattern(job, { ruby: 'ruby-%2B' }, 'd')).toBe('ruby-%2B');
    expect(imagePattern({ ...job, imageName: 'travis-ci-garnet-trusty.%2B' }, {}, 'd')).toBe('travis-ci-garnet-trusty.+');
    expect(imagePattern(job, { ruby: 'ruby-img.+', xenial: 'xenial-img' }, 'd')).toBe('xenial-img');
    expect(imagePattern(job, { ruby: 'stable_alias', stable_alias: 'pinned-1' }, 'd')).toBe('pinned-1');
    expect(imagePattern({ ...job, imageName: 'explicit-1' }, { ruby: 'x' }, 'd')).toBe('explicit-1');
  });

  it('requires an IMAGE_<ALIAS> for each alias', () => {
    expect(() => checkAliases(['stable-alias'], { stable_alias: 'x' })).not.toThrow();
    expect(() => checkAliases(['missing'], {})).toThrow('names missing, but TRAVIS_WORKER_GCE_IMAGE_MISSING is not set');
  });

  it('takes the newest ready image', () => {
    const newest = newestImage([
      { name: 'b', creationTimestamp: '2020-01-01T00:00:00Z' },
      { name: 'a', creationTimestamp: '2021-01-01T00:00:00Z' },
      { name: 'c', creationTimestamp: '2022-01-01T00:00:00Z', status: 'PENDING' },
    ]);
    expect(newest?.name).toBe('a');
  });
});

describe('gce instance spec helpers', () => {
  it('sanitises label values to GCE rules', () => {
    expect(labelValue('Octo.Org/Hello_World')).toBe('octo-org-hello_world');
    expect(labelValue('x'.repeat(80))).toHaveLength(63);
  });

  it('powers the VM off after the hard limit plus the margin', () => {
    expect(implodeMinutes(50 * 60_000)).toBe(60);
  });

  it('knows a zone\'s region and parses the API endpoint', () => {
    expect(regionOf('europe-west1-d')).toBe('europe-west1');
    expect(endpointOptions('https://compute.googleapis.com')).toEqual({ apiEndpoint: 'compute.googleapis.com', port: 443, protocol: 'https' });
    expect(endpointOptions('http://127.0.0.1:8080')).toEqual({ apiEndpoint: '127.0.0.1', port: 8080, protocol: 'http' });
    expect(() => endpointOptions('not a url')).toThrow(/is not a URL/);
  });
});

describe('TRAVIS_WORKER_GCE_ACCOUNT_JSON errors', () => {
  const key = JSON.stringify({ client_email: 'ci@example.iam.gserviceaccount.com', private_key: '-----BEGIN PRIVATE KEY-----\nS3CR3TKEY\n-----END PRIVATE KEY-----\n' });

  it.each([
    ['base64 of the key', Buffer.from(key).toString('base64'), /TRAVIS_WORKER_GCE_ACCOUNT_JSON: is neither JSON text .* nor the path of a readable file \((ENAMETOOLONG|ENOENT)\)$/m],
    ['the key without its opening brace', key.slice(1), /TRAVIS_WORKER_GCE_ACCOUNT_JSON: is neither JSON text/],
    ['broken JSON', `${key.slice(0, -1)},"S3CR3TKEY"`, /TRAVIS_WORKER_GCE_ACCOUNT_JSON: is not valid JSON/],
  ])('names the variable and never quotes the value: %s', (_name, value, message) => {
    const loading = configErrorOf({ TRAVIS_WORKER_PROVIDER_NAME: 'gce', TRAVIS_WORKER_GCE_ACCOUNT_JSON: value }, [definition]);
    expect(loading).toMatch(message);
    expect(loading).not.toMatch(/S3CR3T|client_email|eyJ|LS0t/);
    expect(loading).not.toContain(value.slice(0, 12));
    let thrown: unknown;
    try {
      parseAccountJson(value);
    } catch (err) {
      thrown = err;
    }
    expect(`${String(thrown)} ${String((thrown as Error).cause)}`).not.toMatch(/S3CR3T|client_email|eyJ|LS0t/);
  });
});

describe('gce settings the startup script and tags carry', () => {
  it('refuses an SSH_USER the startup script cannot use and a TRAVIS_SITE that is no network tag, naming each', () => {
    const loading = configErrorOf(
      { TRAVIS_WORKER_PROVIDER_NAME: 'gce', TRAVIS_WORKER_GCE_SSH_USER: 'travis; rm -rf /', TRAVIS_WORKER_GCE_TRAVIS_SITE: 'Org_1' },
      [definition],
    );
    expect(loading).toMatch(/TRAVIS_WORKER_GCE_SSH_USER: .*is not a user name/);
    expect(loading).toMatch(/TRAVIS_WORKER_GCE_TRAVIS_SITE: "Org_1" is not a GCE network tag/);
  });
});

describe("whether the gce backend is on its VM's own credentials (whose scopes it then checks)", () => {
  it('is not with ACCOUNT_JSON, GOOGLE_APPLICATION_CREDENTIALS or gcloud application default credentials; is otherwise', () => {
    const gcloud = mkdtempSync(join(tmpdir(), 'mayfly-gcloud-'));
    try {
      const none = { CLOUDSDK_CONFIG: gcloud };
      expect(usesVmCredentials('', none)).toBe(true);
      expect(usesVmCredentials('/etc/mayfly/key.json', none)).toBe(false);
      expect(usesVmCredentials('', { ...none, GOOGLE_APPLICATION_CREDENTIALS: '/etc/key.json' })).toBe(false);
      writeFileSync(join(gcloud, 'application_default_credentials.json'), '{}');
      expect(usesVmCredentials('', none)).toBe(false);
    } finally {
      rmSync(gcloud, { recursive: true, force: true });
    }
  });
});

describe('the network of gce job VMs from the settings alone (no worker VM to share)', () => {
  const resolve = (settings: { network: string; subnetwork: string; region: string }) =>
    resolveJobNetwork({
      settings,
      projectId: 'ci-project',
      zones: ['us-central1-a'],
      workerVm: undefined,
      getInstance: () => Promise.reject(new Error('not on GCE')),
    });

  it('puts a SUBNETWORK name in the job project and the VM\'s region (or REGION), and leaves the network to GCE when NETWORK is empty', async () => {
    const byZone = await resolve({ network: '', subnetwork: 'ci-sub', region: '' });
    expect(byZone.network).toBeUndefined();
    expect(byZone.subnetworkFor('us-east1')).toBe('projects/ci-project/regions/us-east1/subnetworks/ci-sub');
    const pinned = await resolve({ network: 'ci-vpc', subnetwork: 'ci-sub', region: 'europe-west1' });
    expect(pinned.network).toBe('projects/ci-project/global/networks/ci-vpc');
    expect(pinned.subnetworkFor('us-east1')).toBe('projects/ci-project/regions/europe-west1/subnetworks/ci-sub');
  });

  it('names only the network without SUBNETWORK: NETWORK as given, a name in the job project, else default', async () => {
    expect((await resolve({ network: '', subnetwork: '', region: '' })).network).toBe('projects/ci-project/global/networks/default');
    expect((await resolve({ network: 'projects/host/global/networks/x', subnetwork: '', region: '' })).network).toBe('projects/host/global/networks/x');
    expect((await resolve({ network: 'x', subnetwork: '', region: '' })).subnetworkFor('us-central1')).toBeUndefined();
  });
});

describe("gce settings of travis' warmer", () => {
  it('reads WARMER_URL, WARMER_TIMEOUT and WARMER_SSH_PASSPHRASE (travis\' plain names too) as settings, masking the secrets in --echo-config', () => {
    const env = {
      TRAVIS_WORKER_PROVIDER_NAME: 'gce',
      GCE_WARMER_URL: 'https://warm:s3cr3t-pw@warmer.example.com',
      TRAVIS_WORKER_GCE_WARMER_TIMEOUT: '750ms',
      TRAVIS_WORKER_GCE_WARMER_SSH_PASSPHRASE: 'pass-S3CR3T',
    };
    const config = loadConfig([definition], env);
    expect(config.backendSettings).toMatchObject({ warmerUrl: env.GCE_WARMER_URL, warmerTimeout: 750, warmerSshPassphrase: 'pass-S3CR3T' });
    expect(loadConfig([definition], { TRAVIS_WORKER_PROVIDER_NAME: 'gce' }).backendSettings).toMatchObject({ warmerUrl: '', warmerTimeout: 5_000 });
    const echoed = echoConfig(config, [definition]);
    expect(echoed).toContain('warmer.example.com');
    expect(echoed).not.toMatch(/s3cr3t-pw|S3CR3T/);
  });

  it('refuses a WARMER_URL that is not an http(s) URL, naming it', () => {
    expect(configErrorOf({ TRAVIS_WORKER_PROVIDER_NAME: 'gce', TRAVIS_WORKER_GCE_WARMER_URL: 'warmer:8080' }, [definition])).toMatch(
      /TRAVIS_WORKER_GCE_WARMER_URL: must be an http:\/\/ or https:\/\/ URL/,
    );
  });
});
