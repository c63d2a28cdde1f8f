/**
 * What the gce backend settles at startup, against the fake GCE taught the
 * cloud's rules: the access scopes of a worker VM's own credentials (the
 * fake's metadata server lists them), and the network job VMs go on (the
 * fake refuses a custom-mode network without a subnetwork, knows a Shared
 * VPC host project, and finds the worker's own VM with instances.get).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { definition as gce } from '../../backends/gce/index.js';
import type { GceSettings } from '../../backends/gce/settings.js';
import type { Backend } from '../../src/backend/contract.js';
import { ConfigError, InstanceStartError } from '../../src/errors.js';
import { silentLogger } from '../../src/logger.js';
import { FakeGce, GCE_DEFAULT_SCOPES } from '../fakes/gce-server.js';
import { gceEnv, gceSettings, TEST_ZONES, travisImages } from '../fakes/gce-settings.js';
import { testAttributes } from '../helpers/attributes.js';
import { testBackendContext } from '../helpers/backend-context.js';
import { startTestWorker } from '../helpers/worker.js';

const COMPUTE = 'https://www.googleapis.com/auth/compute';
const CLOUD_PLATFORM = 'https://www.googleapis.com/auth/cloud-platform';
const API = 'https://www.googleapis.com/compute/v1';
const HOST_PROJECT = 'ci-network-host';

let fake: FakeGce;
const backends: Backend[] = [];

beforeEach(async () => {
  fake = await FakeGce.start({ images: travisImages() });
});

afterEach(async () => {
  await Promise.all(backends.splice(0).map((backend) => backend.close()));
  expect(fake.liveInstances().map((record) => `${record.name} ${record.status}`)).toEqual([]);
  await fake.close();
});

function makeBackend(overrides: Partial<GceSettings>): Backend & { ready(signal: AbortSignal): Promise<void> } {
  const backend = gce.create(gceSettings(fake, overrides), testBackendContext());
  backends.push(backend);
  if (backend.ready === undefined) throw new Error('the gce backend has no startup checks');
  return backend as Backend & { ready(signal: AbortSignal): Promise<void> };
}

const ready = (backend: { ready(signal: AbortSignal): Promise<void> }): Promise<unknown> =>
  backend.ready(AbortSignal.timeout(20_000)).then(
    () => undefined,
    (err: unknown) => err,
  );

/** Start a job VM, check it can be reached, delete it; returns its interface as the insert asked for it. */
async function jobVmInterface(backend: Backend): Promise<Record<string, unknown>> {
  const signal = AbortSignal.timeout(30_000);
  const instance = await backend.start(testAttributes(), { signal, logger: silentLogger, progress: () => {}, recordPhase: () => {} });
  await instance.destroy();
  const nics = fake.record.at(-1)?.resource['networkInterfaces'] as Record<string, unknown>[];
  return nics[0] ?? {};
}

/** Requests that were not to the metadata server. */
const apiRequests = (): string[] => fake.requests.filter((request) => !request.operation.startsWith('metadata:')).map((request) => request.operation);

describe("the scopes of a worker VM's own credentials", () => {
  /** A worker on GCE with no ACCOUNT_JSON (its VM's service account), everything else set. */
  const onVmCredentials = { accountJson: '' };

  it('stop the worker at startup, naming the Compute scope, when the VM has only the default scopes', async () => {
    fake.metadata = { projectId: fake.project, zone: 'us-central1-a', network: 'default', scopes: GCE_DEFAULT_SCOPES };
    const error = await ready(makeBackend(onVmCredentials));
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as Error).message).toContain(`lack ${COMPUTE}`);
    expect((error as Error).message).toContain('TRAVIS_WORKER_GCE_ACCOUNT_JSON');
    expect(fake.requests.map((request) => request.operation)).toContain('metadata:instance/service-accounts/default/scopes');
    expect(apiRequests()).toEqual([]);
  });

  it.each([COMPUTE, CLOUD_PLATFORM])('are enough with %s', async (scope) => {
    fake.metadata = { projectId: fake.project, zone: 'us-central1-a', network: 'default', scopes: [...GCE_DEFAULT_SCOPES, scope] };
    expect(await ready(makeBackend(onVmCredentials))).toBeUndefined();
  });

  it('are not asked for when ACCOUNT_JSON gives the credentials (their scopes are the ones the worker asks for)', async () => {
    fake.metadata = { projectId: fake.project, zone: 'us-central1-a', network: 'default', scopes: GCE_DEFAULT_SCOPES };
    expect(await ready(makeBackend({}))).toBeUndefined();
    expect(fake.requests.map((request) => request.operation)).not.toContain('metadata:instance/service-accounts/default/scopes');
  });

  it('stop a whole worker before it takes a job', async () => {
    fake.metadata = { projectId: fake.project, zone: 'us-central1-a', network: 'default', scopes: GCE_DEFAULT_SCOPES };
    const base = await mkdtemp(join(tmpdir(), 'mayfly-gce-scopes-'));
    try {
      const env = { ...gceEnv(fake), TRAVIS_WORKER_QUEUE_TYPE: 'file', TRAVIS_WORKER_BASE_DIR: base };
      delete (env as Record<string, string | undefined>)['TRAVIS_WORKER_GCE_ACCOUNT_JSON'];
      const error = await startTestWorker(env).then(
        async (worker) => {
          await worker.stop();
          return undefined;
        },
        (err: unknown) => err,
      );
      expect(error).toBeInstanceOf(ConfigError);
      expect((error as Error).message).toContain(`lack ${COMPUTE}`);
    } finally {
      await rm(base, { recursive: true, force: true });
    }
  });
});

describe('the network of job VMs', () => {
  const customVpc = (project: string): void => {
    fake.networks.push({ project, name: 'ci-vpc', mode: 'custom', subnetworks: [{ region: 'us-central1', name: 'ci-subnet' }] });
  };
  const networkUrl = (project: string): string => `${API}/projects/${project}/global/networks/ci-vpc`;
  const subnetworkUrl = (project: string): string => `${API}/projects/${project}/regions/us-central1/subnetworks/ci-subnet`;

  it("is the worker's own network and subnetwork, as its VM has them, on a custom-mode VPC when neither NETWORK nor SUBNETWORK is set", async () => {
    customVpc(fake.project);
    fake.workerVm({ name: 'mayfly-worker-1', zone: 'us-central1-b', network: networkUrl(fake.project), subnetwork: subnetworkUrl(fake.project) });
    const backend = makeBackend({ projectId: '', zones: [], network: '' });
    expect(await ready(backend)).toBeUndefined();
    expect(await jobVmInterface(backend)).toMatchObject({ network: networkUrl(fake.project), subnetwork: subnetworkUrl(fake.project) });
    expect(fake.record.at(-1)?.zone).toBe('us-central1-b');
  });

  it("is the Shared VPC host project's network and subnetwork the worker's VM is on, never a network of that name in the job project", async () => {
    customVpc(HOST_PROJECT);
    fake.workerVm({ name: 'mayfly-worker-1', zone: 'us-central1-a', network: networkUrl(HOST_PROJECT), subnetwork: subnetworkUrl(HOST_PROJECT) });
    const backend = makeBackend({ network: '' });
    expect(await jobVmInterface(backend)).toMatchObject({ network: networkUrl(HOST_PROJECT), subnetwork: subnetworkUrl(HOST_PROJECT) });
  });

  it("is the worker's own interface too when NETWORK names the worker's network: a name says no project, and a Shared VPC's is the host's", async () => {
    customVpc(HOST_PROJECT);
    fake.workerVm({ name: 'mayfly-worker-1', zone: 'us-central1-a', network: networkUrl(HOST_PROJECT), subnetwork: subnetworkUrl(HOST_PROJECT) });
    const backend = makeBackend({ network: 'ci-vpc' });
    expect(await jobVmInterface(backend)).toMatchObject({ network: networkUrl(HOST_PROJECT), subnetwork: subnetworkUrl(HOST_PROJECT) });
  });

  it("is the worker's auto-mode network, with the subnetwork left to GCE, for zones in another region than the worker", async () => {
    const network = `${API}/projects/${fake.project}/global/networks/default`;
    fake.workerVm({ name: 'mayfly-worker-1', zone: 'us-east1-b', network, subnetwork: `${API}/projects/${fake.project}/regions/us-east1/subnetworks/default` });
    const backend = makeBackend({ network: '' });
    expect(await ready(backend)).toBeUndefined();
    const nic = await jobVmInterface(backend);
    expect(nic).toMatchObject({ network });
    expect(nic).not.toHaveProperty('subnetwork');
  });

  it("takes SUBNETWORK given as a Shared VPC host project's URL as it is, and puts a named NETWORK in that host project", async () => {
    customVpc(HOST_PROJECT);
    const backend = makeBackend({ network: 'ci-vpc', subnetwork: subnetworkUrl(HOST_PROJECT) });
    expect(await jobVmInterface(backend)).toEqual(
      expect.objectContaining({ network: `projects/${HOST_PROJECT}/global/networks/ci-vpc`, subnetwork: subnetworkUrl(HOST_PROJECT) }),
    );
  });

  it("stops the worker at startup, saying to set SUBNETWORK, when ZONES are outside the region of the worker's own custom-mode subnetwork", async () => {
    customVpc(fake.project);
    fake.workerVm({ name: 'mayfly-worker-1', zone: 'us-central1-b', network: networkUrl(fake.project), subnetwork: subnetworkUrl(fake.project) });
    const error = await ready(makeBackend({ network: '', zones: ['us-east1-b', ...TEST_ZONES] }));
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as Error).message).toMatch(/^TRAVIS_WORKER_GCE_ZONES: us-east1-b is not in us-central1, .*set TRAVIS_WORKER_GCE_SUBNETWORK/);
  });

  it('fails a start on a custom-mode network named without SUBNETWORK, saying to set SUBNETWORK, as GCE refuses the insert', async () => {
    customVpc(fake.project);
    const backend = makeBackend({ network: 'ci-vpc' });
    const error = await jobVmInterface(backend).catch((err: unknown) => err);
    expect(error).toBeInstanceOf(InstanceStartError);
    expect((error as Error).message).toContain('the network is a custom-mode VPC: set TRAVIS_WORKER_GCE_SUBNETWORK');
    expect((error as Error).message).toContain('Subnetwork should be specified for custom subnetmode network');
  });
});
