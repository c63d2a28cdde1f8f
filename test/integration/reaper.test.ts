/**
 * The orphan reaper against each backend that can list its instances (gce
 * and ec2 through their SDKs against the fakes, docker against the real test
 * engine): instances made behind the worker's back are destroyed when their
 * lease expired or when this worker's earlier run left them, never when
 * another worker's lease is live, and never when they lack mayfly's labels.
 * Then the real thing: a worker process running a job, or holding a full
 * warm pool, is killed with SIGKILL, and the next worker of the same name
 * cleans up after it.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LABELS as DOCKER_LABELS } from '../../backends/docker/backend.js';
import { definition as docker } from '../../backends/docker/index.js';
import { definition as ec2 } from '../../backends/ec2/index.js';
import { TAG_JOB_ID, TAG_LEASE_EXPIRES, TAG_WORKER } from '../../backends/ec2/tags.js';
import { WARM_JOB_ID } from '../../src/warm-pool/pool.js';
import { definition as gce } from '../../backends/gce/index.js';
import { LABELS as GCE_LABELS, labelValue } from '../../backends/gce/instance-spec.js';
import type { Backend } from '../../src/backend/contract.js';
import { silentLogger } from '../../src/logger.js';
import { HeldInstances } from '../../src/reaper/held.js';
import { reapOnce, type ReapSummary } from '../../src/reaper/reaper.js';
import { FakeEc2, type FakeEc2Instance } from '../fakes/ec2-server.js';
import { ec2Env, ec2Settings, registerDefaultImage } from '../fakes/ec2-settings.js';
import { FakeGce } from '../fakes/gce-server.js';
import { TEST_ZONES, gceSettings, travisImages } from '../fakes/gce-settings.js';
import { testBackendContext, type RecordedApiCall } from '../helpers/backend-context.js';
import { TEST_IMAGE, describeWithDocker, dockerUnavailable, testDockerSettings, testEngine, testWorkerName } from '../helpers/docker.js';
import { KILLED_JOB_ID, killWorkerMidJob, killWorkerProcess, killWorkerWhen, type WorkerProcess } from '../helpers/killed-worker.js';
import { startTestWorker, type TestWorker } from '../helpers/worker.js';

const HOUR = 3_600_000;
const MINUTE = 60_000;
/** Another live worker. */
const OTHER = 'worker-elsewhere';

/** One reaper pass over `backend` as worker `hostname`, with nothing held by this process. */
function reap(backend: Backend, hostname: string, graceMs: number): Promise<ReapSummary> {
  const { listManaged, destroyManaged } = backend;
  if (!listManaged || !destroyManaged) throw new Error('the backend cannot list its instances');
  return reapOnce(
    {
      backend: { listManaged: listManaged.bind(backend), destroyManaged: destroyManaged.bind(backend) },
      held: new HeldInstances(),
      hostname,
      intervalMs: HOUR,
      graceMs,
      logger: silentLogger,
      metrics: { reaped: () => {}, reaperFailed: () => {} },
    },
    AbortSignal.timeout(20_000),
  );
}

const byId = (summary: ReapSummary): ReapSummary['reaped'] => [...summary.reaped].sort((a, b) => a.id.localeCompare(b.id));
const operations = (calls: RecordedApiCall[]): string[] => [...new Set(calls.map((call) => call.operation))].sort();

describe('reaper on gce (fake GCE, real SDK)', () => {
  const host = 'Reaper.GCE.Worker-1';
  let fake: FakeGce;
  let backend: Backend;
  let apiCalls: RecordedApiCall[];

  beforeEach(async () => {
    fake = await FakeGce.start({ images: travisImages() });
    const context = testBackendContext({ hostname: host });
    apiCalls = context.apiCalls;
    backend = gce.create(gceSettings(fake), context);
  });
  afterEach(async () => {
    await backend?.close();
    await fake?.close();
  });

  const labels = (jobId: number, worker: string, leaseMs: number): Record<string, string> => ({
    [GCE_LABELS.jobId]: String(jobId),
    [GCE_LABELS.repository]: 'octo-repo',
    [GCE_LABELS.worker]: labelValue(worker),
    [GCE_LABELS.leaseExpiry]: String(Math.floor((Date.now() + leaseMs) / 1000)),
  });

  it('destroys the expired and the left-behind, leaves live leases, young ones and what is not mayfly\'s', async () => {
    const old = Date.now() - 2 * HOUR;
    const [zoneA, zoneB] = TEST_ZONES as [string, string];
    const expired = fake.plant({ name: 'travis-job-expired', zone: zoneB, labels: labels(1, OTHER, -MINUTE), createdAt: old });
    const live = fake.plant({ name: 'travis-job-live', zone: zoneA, labels: labels(2, OTHER, HOUR), createdAt: old });
    // Not mayfly's: no labels, or only some of them (even an expired lease).
    const foreign = [
      fake.plant({ name: 'database-1', zone: zoneA, labels: {}, createdAt: old }),
      fake.plant({ name: 'travis-job-foreign', zone: zoneA, labels: { [GCE_LABELS.jobId]: '3', [GCE_LABELS.leaseExpiry]: '1' }, createdAt: old }),
    ];
    const leftBehind = fake.plant({ name: 'travis-job-left', zone: zoneA, labels: labels(4, host, HOUR), createdAt: old });
    const young = fake.plant({ name: 'travis-job-young', zone: zoneB, labels: labels(5, host, HOUR), createdAt: Date.now() });

    const summary = await reap(backend, host, 10 * MINUTE);
    expect(byId(summary)).toEqual([
      { id: expired.name, reason: 'lease-expired' },
      { id: leftBehind.name, reason: 'orphaned' },
    ]);
    expect(summary.listed).toBe(4);
    expect(fake.liveInstances().map((record) => record.name).sort()).toEqual([...foreign.map((r) => r.name), live.name, young.name].sort());
    expect([...foreign, live, young].map((record) => record.deleteRequests)).toEqual([0, 0, 0, 0]);
    // Every call went through the backend's CloudApi (rate limit, retries, metrics).
    expect(operations(apiCalls)).toEqual(expect.arrayContaining(['instances.delete', 'instances.list']));
  });
});

describe('reaper on ec2 (fake EC2, real SDK)', () => {
  const host = 'reaper-ec2-worker-1';
  let fake: FakeEc2;
  let backend: Backend;
  let apiCalls: RecordedApiCall[];

  beforeEach(async () => {
    fake = await FakeEc2.start({ bootDelayMs: 20 });
    registerDefaultImage(fake);
    const context = testBackendContext({ hostname: host });
    apiCalls = context.apiCalls;
    backend = ec2.create(ec2Settings(fake), context);
  });
  afterEach(async () => {
    await backend?.close();
    await fake?.close();
  });

  const tags = (jobId: number, worker: string, leaseMs: number): Record<string, string> => ({
    Name: `travis-job-${jobId}`,
    [TAG_JOB_ID]: String(jobId),
    [TAG_WORKER]: worker,
    [TAG_LEASE_EXPIRES]: new Date(Date.now() + leaseMs).toISOString(),
  });

  it('destroys the expired and the left-behind, leaves live leases, young ones and what is not mayfly\'s', async () => {
    const old = new Date(Date.now() - 2 * HOUR);
    const expired = fake.plant({ tags: tags(1, OTHER, -MINUTE), launchTime: old });
    const live = fake.plant({ tags: tags(2, OTHER, HOUR), launchTime: old });
    // travis-ci/worker's tags (no worker, no lease), and an operator's instance with an expired-looking lease tag only.
    const foreign = [
      fake.plant({ tags: { Name: 'travis-job-3', [TAG_JOB_ID]: '3', 'travis.repo': 'octo/repo' }, launchTime: old }),
      fake.plant({ tags: { Name: 'db', [TAG_LEASE_EXPIRES]: '2001-01-01T00:00:00Z' }, launchTime: old }),
    ];
    const leftBehind = fake.plant({ tags: tags(4, host, HOUR), launchTime: old });
    const young = fake.plant({ tags: tags(5, host, HOUR) });

    const summary = await reap(backend, host, 10 * MINUTE);
    expect(byId(summary)).toEqual(
      [
        { id: expired.instanceId, reason: 'lease-expired' },
        { id: leftBehind.instanceId, reason: 'orphaned' },
      ].sort((a, b) => a.id.localeCompare(b.id)),
    );
    expect(fake.live().map((instance) => instance.instanceId).sort()).toEqual(
      [...foreign, live, young].map((instance) => instance.instanceId).sort(),
    );
    expect([...foreign, live, young].map((instance) => instance.terminateRequests)).toEqual([0, 0, 0, 0]);
    expect(operations(apiCalls)).toEqual(['DescribeInstances', 'TerminateInstances']);
  });

  it('asks for the instances page by page (MaxResults) and reaps those of every page', async () => {
    fake.maxPageSize = 2;
    const expired = Array.from({ length: 5 }, (_, index) => fake.plant({ tags: tags(10 + index, OTHER, -MINUTE), launchTime: new Date(Date.now() - HOUR) }));
    const summary = await reap(backend, host, 10 * MINUTE);
    expect(summary.reaped.map((reaped) => reaped.id).sort()).toEqual(expired.map((instance) => instance.instanceId).sort());
    const listings = fake.callsOf('DescribeInstances').filter((call) => call.params['Filter.1.Name'] === 'tag-key');
    expect(listings.map((call) => call.params.MaxResults)).toEqual(['1000', '1000', '1000']);
  });
});

const dockerMissing = await dockerUnavailable();

describeWithDocker('reaper on docker (real engine)', dockerMissing, () => {
  const host = testWorkerName();
  const engine = testEngine();
  const made: string[] = [];
  let backend: Backend;

  beforeEach(() => {
    backend = docker.create(testDockerSettings(), testBackendContext({ hostname: host }));
  });
  afterEach(async () => {
    await backend?.close();
    for (const id of made.splice(0)) await engine.removeContainer(id, AbortSignal.timeout(20_000));
  });
  afterAll(async () => {
    await engine.api.close();
  });

  /** A container made behind the worker's back (created, not started: the reaper takes any state). */
  async function plant(name: string, labels: Record<string, string>): Promise<string> {
    const id = await engine.createContainer(
      `${host}-${name}`,
      { Image: TEST_IMAGE, Cmd: ['/bin/true'], Hostname: name, Domainname: '', Labels: labels, HostConfig: { Binds: [], Privileged: false, Tmpfs: {} } },
      AbortSignal.timeout(20_000),
    );
    made.push(id);
    return id.slice(0, 12);
  }

  const labels = (jobId: number, worker: string, leaseMs: number): Record<string, string> => ({
    [DOCKER_LABELS.jobId]: String(jobId),
    [DOCKER_LABELS.worker]: worker,
    [DOCKER_LABELS.leaseExpiresAt]: new Date(Date.now() + leaseMs).toISOString(),
  });

  async function exists(id: string): Promise<boolean> {
    return (await engine.inspectContainer(id, AbortSignal.timeout(20_000))) !== undefined;
  }

  it('destroys the expired and, after the grace period, the left-behind; leaves live leases and what is not mayfly\'s', async () => {
    const expired = await plant('expired', labels(1, `${host}-other`, -MINUTE));
    const live = await plant('live', labels(2, `${host}-other`, HOUR));
    const foreign = [
      await plant('foreign', { [DOCKER_LABELS.jobId]: '3', 'travis.repo': 'octo/repo' }),
      await plant('foreign-lease', { [DOCKER_LABELS.leaseExpiresAt]: '2001-01-01T00:00:00Z' }),
    ];
    const leftBehind = await plant('left', labels(4, host, HOUR));

    // Within the grace period the left-behind container may be a start in flight.
    const first = await reap(backend, host, HOUR);
    expect(first.reaped).toEqual([{ id: expired, reason: 'lease-expired' }]);
    expect(await exists(leftBehind)).toBe(true);

    const second = await reap(backend, host, 0);
    expect(second.reaped).toEqual([{ id: leftBehind, reason: 'orphaned' }]);
    expect(await Promise.all([expired, leftBehind].map(exists))).toEqual([false, false]);
    expect(await Promise.all([live, ...foreign].map(exists))).toEqual([true, true, true]);
  });
});

describe('a worker killed with SIGKILL (ec2)', () => {
  const host = 'reaper-kill9-worker';
  let fake: FakeEc2;
  let base: string;
  let killed: WorkerProcess | undefined;
  let successor: TestWorker | undefined;

  beforeEach(async () => {
    fake = await FakeEc2.start({ bootDelayMs: 20 });
    registerDefaultImage(fake);
    base = await mkdtemp(join(tmpdir(), 'mayfly-kill9-'));
  });
  afterEach(async () => {
    await killWorkerProcess(killed);
    await successor?.stop();
    await fake?.close();
    await rm(base, { recursive: true, force: true });
  });

  it("mid-job: leaves an instance behind, which the next worker of the same name destroys in its reaper's first pass", async () => {
    const { env } = await killWorkerMidJob(base, host, { TRAVIS_WORKER_PROVIDER_NAME: 'ec2', ...ec2Env(fake) }, (worker) => (killed = worker));
    const [left] = fake.live();
    expect(fake.live().map((instance) => [instance.state, instance.tags[TAG_WORKER], instance.tags[TAG_JOB_ID]])).toEqual([['running', host, String(KILLED_JOB_ID)]]);

    // The grace period covers a start in flight; this worker has none, and the instance is seconds old.
    successor = await startTestWorker({ ...env, TRAVIS_WORKER_REAPER_GRACE: '0s', TRAVIS_WORKER_REAPER_INTERVAL: '1h' });
    const summary = await successor.worker.reaper?.firstPass;
    expect(summary?.reaped).toEqual([{ id: left?.instanceId, reason: 'orphaned' }]);
    expect(fake.live()).toEqual([]);
  }, 60_000);

  it("with a full warm pool: leaves its warm instances behind, which the next worker of the same name destroys in its reaper's first pass", async () => {
    const launched: FakeEc2Instance[] = [];
    const twoWarm = new Promise<void>((resolve) => {
      fake.on('launched', (instance: FakeEc2Instance) => {
        launched.push(instance);
        if (launched.length === 2) resolve();
      });
    });
    const env = { TRAVIS_WORKER_PROVIDER_NAME: 'ec2', ...ec2Env(fake), TRAVIS_WORKER_WARM_POOL_SIZE: '2', TRAVIS_WORKER_WARM_POOL_MODE: 'fixed' };
    killed = await killWorkerWhen(base, host, env, twoWarm, (worker) => (killed = worker));
    expect(fake.live().map((instance) => [instance.tags[TAG_WORKER], instance.tags[TAG_JOB_ID]])).toEqual([
      [host, String(WARM_JOB_ID)],
      [host, String(WARM_JOB_ID)],
    ]);

    // The grace period covers a start in flight; this worker has none, and the instances are seconds old.
    successor = await startTestWorker({ ...killed.env, TRAVIS_WORKER_WARM_POOL_SIZE: '0', TRAVIS_WORKER_REAPER_GRACE: '0s', TRAVIS_WORKER_REAPER_INTERVAL: '1h' });
    const summary = await successor.worker.reaper?.firstPass;
    expect(summary?.reaped.map((reaped) => reaped.reason)).toEqual(['orphaned', 'orphaned']);
    expect(fake.live()).toEqual([]);
  }, 60_000);
});
