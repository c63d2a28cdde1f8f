/**
 * The gce backend through the real `@google-cloud/compute` SDK against the
 * fake GCE (test/fakes/gce-server.ts): whole jobs through a worker on
 * RabbitMQ, and the backend's own paths (zones, throttling, aborted
 * starts, preemption, images, lost deletes). After every test the fake's
 * record must show no instance left.
 */
import { once } from 'node:events';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { definition as gce } from '../../backends/gce/index.js';
import type { GceSettings } from '../../backends/gce/settings.js';
import type { Backend, BootPhase, Instance, StartAttributes, StartOptions } from '../../src/backend/contract.js';
import { ConfigError, ConnectionLostError, InstanceStartError, NoCapacityError, PayloadError, StartupTimeoutError, errorMessage } from '../../src/errors.js';
import { silentLogger } from '../../src/logger.js';
import { FakeGce } from '../fakes/gce-server.js';
import { gceEnv, gceSettings, travisImages } from '../fakes/gce-settings.js';
import { testAttributes } from '../helpers/attributes.js';
import { testBackendContext, type RecordedApiCall } from '../helpers/backend-context.js';
import { CollectingWritable } from '../helpers/collect.js';
import { drain, messageCount, publishRaw } from '../helpers/rabbitmq.js';
import type { TestWorker } from '../helpers/worker.js';
import { startBuildApi, type FakeBuildApi } from '../helpers/build-api.js';
import { useAmqpWorker } from '../helpers/amqp-worker.js';
import { captureLog } from '../helpers/log-capture.js';

const never = new AbortController().signal;
let fake: FakeGce;

beforeEach(async () => {
  fake = await FakeGce.start({ images: travisImages() });
});

interface Started {
  backend: Backend;
  apiCalls: RecordedApiCall[];
  progress: string[];
  phases: BootPhase[];
  options(signal?: AbortSignal): StartOptions;
}

const backends: Backend[] = [];
const instances: Instance[] = [];
afterEach(async () => {
  await Promise.all(instances.splice(0).map((instance) => instance.destroy()));
  await Promise.all(backends.splice(0).map((backend) => backend.close()));
  // Nothing left behind, whatever the test did.
  expect(fake.liveInstances().map((record) => `${record.name} ${record.status}`)).toEqual([]);
  await fake.close();
});

function makeBackend(overrides: Partial<GceSettings> = {}): Started {
  const context = testBackendContext();
  const backend = gce.create(gceSettings(fake, overrides), context);
  backends.push(backend);
  const progress: string[] = [];
  const phases: BootPhase[] = [];
  return {
    backend,
    apiCalls: context.apiCalls,
    progress,
    phases,
    options: (signal = never) => ({
      signal,
      progress: (line) => progress.push(line),
      logger: silentLogger,
      recordPhase: (phase) => phases.push(phase),
    }),
  };
}

async function startOn(started: Started, attributes: Partial<StartAttributes> = {}): Promise<Instance> {
  const instance = await started.backend.start(testAttributes(attributes), started.options());
  instances.push(instance);
  return instance;
}

async function runScript(instance: Instance, script: string): Promise<{ exitCode: number | null; output: string }> {
  await instance.upload(Buffer.from(script), { signal: never });
  const output = new CollectingWritable();
  const result = await instance.run({ output, signal: never });
  return { exitCode: result.exitCode, output: output.text };
}

describe('gce backend against the fake GCE', () => {
  it('boots a VM with the job key in ssh-keys, labels, a self-destruct timer and the mapped machine; runs a script; deletes it', async () => {
    const started = makeBackend();
    const before = Date.now();
    const instance = await startOn(started, { jobId: 771, repository: 'Octo.Org/Hello_World', vmSize: 'gpu-medium' });
    const after = Date.now();
    expect(instance.id).toMatch(/^travis-job-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    const [record] = fake.record;
    expect(record?.name).toBe(instance.id);
    expect(record?.zone).toBe('us-central1-a');
    expect(record?.metadata['ssh-keys']).toMatch(/^[a-z_][a-z0-9_-]*:ssh-ed25519 AAAA\S+ mayfly$/);
    expect(record?.metadata['block-project-ssh-keys']).toBe('true');
    expect(record?.metadata['startup-script']).toContain('shutdown -P +20 ');
    const hardLimitAndMarginS = (10 * 60_000 + 10 * 60_000) / 1000;
    expect(record?.labels).toMatchObject({ 'travis-job-id': '771', 'travis-repository': 'octo-org-hello_world', 'travis-worker': 'test-worker' });
    const expiry = Number(record?.labels['travis-lease-expiry']);
    expect(expiry).toBeGreaterThanOrEqual(Math.floor(before / 1000) + hardLimitAndMarginS);
    expect(expiry).toBeLessThanOrEqual(Math.ceil(after / 1000) + hardLimitAndMarginS);
    expect(record?.resource).toMatchObject({
      machineType: 'zones/us-central1-a/machineTypes/n1-standard-8',
      guestAccelerators: [{ acceleratorCount: 1, acceleratorType: `projects/${fake.project}/zones/us-central1-a/acceleratorTypes/nvidia-tesla-t4` }],
      // GCE deletes the VM itself after the hard limit (10 minutes here) and the 10-minute margin.
      scheduling: { onHostMaintenance: 'TERMINATE', automaticRestart: false, maxRunDuration: { seconds: String(hardLimitAndMarginS) }, instanceTerminationAction: 'DELETE' },
      disks: [{ boot: true, autoDelete: true, initializeParams: { diskSizeGb: '300' } }],
    });

    expect(await runScript(instance, 'echo "hello from $(hostname)"; exit 3')).toMatchObject({ exitCode: 3, output: expect.stringContaining('hello from') });
    expect(started.progress).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^Using image travis-ci-sugilite-trusty-/),
        `Starting instance ${instance.id} in us-central1-a`,
        expect.stringMatching(/^instance running after \d+\.\ds$/),
        expect.stringMatching(/^waiting for SSH on 127\./),
        expect.stringMatching(/^SSH ready after \d+\.\ds$/),
      ]),
    );
    expect(started.phases).toEqual(['create', 'running', 'ip', 'ssh-ready', 'upload']);
    await instance.destroy();
    expect(record).toMatchObject({ deleted: true, deleteRequests: 1 });
  });

  it("reaches a VM without Google's guest agent (as travis' images may be) through the key its startup script installs, keeping ssh-keys too", async () => {
    fake.guestAgent = false;
    const started = makeBackend({ uploadRetries: 3, autoImplode: false });
    const instance = await startOn(started);
    const [record] = fake.record;
    const user = gceSettings(fake).sshUser;
    expect(record?.metadata['startup-script']).toContain(`~${user}/.ssh/authorized_keys`);
    expect(record?.metadata['ssh-keys']).toMatch(new RegExp(`^${user}:ssh-ed25519 `));
    expect(await runScript(instance, 'exit 0')).toMatchObject({ exitCode: 0 });
  });

  it("turns OS Login off on the job's VM, so a project with OS Login on still lets the job's key in", async () => {
    fake.projectOsLogin = true;
    const instance = await startOn(makeBackend());
    expect(fake.record[0]?.metadata['enable-oslogin']).toBe('FALSE');
    expect((await runScript(instance, 'echo in')).output).toContain('in');
  });

  it('adds TRAVIS_SITE to the network tags, as travis does', async () => {
    await startOn(makeBackend({ travisSite: 'org' }));
    await startOn(makeBackend({ travisSite: 'com', publicIp: false }));
    expect(fake.record.map((record) => record.resource['tags'])).toEqual([{ items: ['testing', 'org'] }, { items: ['testing', 'no-ip', 'com'] }]);
  });

  it('attaches no GPUs for GPU_COUNT to a job that asks for none (travis reads it but never attaches it), and warns that it has no effect', async () => {
    const log = captureLog();
    const context = testBackendContext({ logger: log.logger });
    const backend = gce.create(gceSettings(fake, { gpuCount: 2 }), context);
    backends.push(backend);
    const instance = await backend.start(testAttributes(), { signal: never, progress: () => {}, logger: silentLogger, recordPhase: () => {} });
    instances.push(instance);
    const resource = fake.record[0]?.resource ?? {};
    // The SDK leaves an empty list off the wire.
    expect(resource['guestAccelerators'] ?? []).toEqual([]);
    expect(resource).toMatchObject({ scheduling: { onHostMaintenance: 'MIGRATE' } });
    expect(log.lines).toEqual(expect.arrayContaining([expect.objectContaining({ level: 'warn', msg: expect.stringContaining('TRAVIS_WORKER_GCE_GPU_COUNT has no effect') })]));
  });

  it('puts a job that asks for GPUs with an n2 vm_size on the N1 machine of the same size, the only family GCE attaches them to', async () => {
    const started = makeBackend();
    await startOn(started, { vmSize: 'large', vmConfig: { gpuCount: 1 } });
    expect(fake.record[0]?.resource).toMatchObject({
      machineType: 'zones/us-central1-a/machineTypes/n1-standard-4',
      guestAccelerators: [{ acceleratorCount: 1, acceleratorType: `projects/${fake.project}/zones/us-central1-a/acceleratorTypes/nvidia-tesla-p100` }],
    });
  });

  it('refuses a GPU type GCE does not attach to a VM with a job error naming vm_config.gpu_type, and inserts nothing', async () => {
    const started = makeBackend();
    const error = await started.backend.start(testAttributes({ vmConfig: { gpuCount: 1, gpuType: 'nvidia-l4' } }), started.options()).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(error).toBeInstanceOf(PayloadError);
    expect(error).toMatchObject({ requeue: false, field: 'vm_config.gpu_type' });
    expect(fake.record).toEqual([]);
  });

  it('falls back to the next zone on a capacity error, and says so', async () => {
    fake.zoneFault('us-central1-a', 'capacity');
    const started = makeBackend();
    const instance = await startOn(started);
    expect(fake.record.map((record) => record.zone)).toEqual(['us-central1-b']);
    expect(started.progress).toContain('No capacity in us-central1-a; trying us-central1-b');
    expect((await runScript(instance, 'exit 0')).exitCode).toBe(0);
  });

  it('tries the next zone when a zone does not offer the machine or GPU type, and says when none does', async () => {
    fake.zoneLacks('us-central1-a', 'nvidia-tesla-t4');
    const started = makeBackend();
    await startOn(started, { vmSize: 'gpu-medium' });
    expect(fake.record.map((record) => record.zone)).toEqual(['us-central1-b']);
    expect(started.progress).toContain('No such machine in us-central1-a; trying us-central1-b');

    fake.zoneLacks('us-central1-a', 'n2-standard-4');
    fake.zoneLacks('us-central1-b', 'n2-standard-4');
    const error = await started.backend.start(testAttributes({ vmSize: 'large' }), started.options()).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(error).toBeInstanceOf(InstanceStartError);
    expect(errorMessage(error)).toContain("Machine type with name 'n2-standard-4' does not exist in zone 'us-central1-b'");
  });

  it('requeues with NoCapacityError naming quota or capacity when every zone refuses, and does not fall back for a pinned zone', async () => {
    fake.zoneFault('us-central1-a', 'quota');
    fake.zoneFault('us-central1-b', 'capacity');
    const started = makeBackend();
    const error = await started.backend.start(testAttributes(), started.options()).catch((err: unknown) => err);
    expect(error).toBeInstanceOf(NoCapacityError);
    expect((error as NoCapacityError).requeue).toBe(true);
    expect((error as Error).message).toMatch(/us-central1-a: no quota .*us-central1-b: no capacity .*ZONE_RESOURCE_POOL_EXHAUSTED/);

    fake.zoneFault('us-central1-b', undefined);
    const pinned = await started.backend.start(testAttributes({ vmConfig: { zone: 'us-central1-a' } }), started.options()).catch((err: unknown) => err);
    expect(pinned).toBeInstanceOf(NoCapacityError);
    expect((pinned as Error).message).toContain('quota');
    const inserts = fake.requests.filter((r) => r.operation === 'instances.insert').map((r) => r.path);
    expect(inserts).toHaveLength(3);
    expect(inserts[2]).toContain('/zones/us-central1-a/');
  });

  it('retries throttled (429), failing (5xx) and reset calls with backoff, and counts every attempt', async () => {
    fake.inject('instances.insert', 'throttled', 2);
    fake.inject('instances.get', 'server', 1);
    fake.inject('zoneOperations.wait', 'reset', 1);
    fake.bootMs = 100; // the insert operation is waited on at least once
    const started = makeBackend();
    const instance = await startOn(started);
    expect((await runScript(instance, 'exit 0')).exitCode).toBe(0);
    const outcomes = (operation: string): string[] => started.apiCalls.filter((c) => c.operation === operation).map((c) => c.outcome);
    expect(outcomes('instances.insert')).toEqual(['throttled', 'throttled', 'ok']);
    expect(outcomes('instances.get')[0]).toBe('error');
    expect(outcomes('zoneOperations.wait')[0]).toBe('error');
    expect(fake.record).toHaveLength(1);
  });

  it("waits for the insert and delete operations with zoneOperations.wait, never sleeping travis' pre-poll or polling the operation", async () => {
    fake.bootMs = 300;
    // travis would sleep ten minutes before its first look: a start that sleeps would not end within the test.
    const started = makeBackend({ bootPrePollSleep: 10 * 60_000, stopPrePollSleep: 10 * 60_000, stopPollSleep: 10 * 60_000 });
    const instance = await started.backend.start(testAttributes(), started.options(AbortSignal.timeout(20_000)));
    expect(fake.count('zoneOperations.wait')).toBeGreaterThanOrEqual(1);
    const waits = fake.count('zoneOperations.wait');
    await instance.destroy();
    expect(fake.count('zoneOperations.wait')).toBeGreaterThan(waits);
    expect(fake.count('zoneOperations.get')).toBe(0);
    expect(fake.record[0]).toMatchObject({ deleted: true });
  });

  it('makes one VM when an insert is carried out but its answer is lost (the retry reuses the request id)', async () => {
    fake.inject('instances.insert', 'drop', 1);
    const started = makeBackend();
    const instance = await startOn(started);
    expect(fake.count('instances.insert')).toBe(2);
    expect(fake.record.map((record) => record.name)).toEqual([instance.id]);
    expect(started.apiCalls.filter((c) => c.operation === 'instances.insert').map((c) => c.outcome)).toEqual(['error', 'ok']);
  });

  it('deletes the VM when the start is aborted by the startup timeout while it boots', async () => {
    fake.bootMs = 10 * 60_000;
    const started = makeBackend();
    const timeout = new AbortController();
    const starting = started.backend.start(testAttributes(), started.options(timeout.signal));
    const record = await fake.nextInsert();
    await fake.nextRequest('zoneOperations.wait');
    const reason = new StartupTimeoutError('instance not ready within the startup timeout');
    timeout.abort(reason);
    await expect(starting).rejects.toBe(reason);
    expect(record).toMatchObject({ deleted: true, deleteRequests: 1 });
  });

  it('deletes the VM when the job is cancelled while the insert is still on the wire', async () => {
    const started = makeBackend();
    const cancel = new AbortController();
    const starting = started.backend.start(testAttributes(), started.options(cancel.signal));
    // The fake emits `insert` before it answers: the request is in flight.
    const record = await fake.nextInsert();
    cancel.abort(new Error('cancelled by the user'));
    await expect(starting).rejects.toThrow('cancelled by the user');
    expect(record.deleted).toBe(true);
  });

  it('rejects an already aborted start without creating anything', async () => {
    const started = makeBackend();
    const cancelled = new AbortController();
    cancelled.abort(new Error('too late'));
    await expect(started.backend.start(testAttributes(), started.options(cancelled.signal))).rejects.toThrow('too late');
    expect(fake.record).toEqual([]);
  });

  it('turns a preemption during the run into a requeueing ConnectionLostError', async () => {
    const started = makeBackend({ preemptible: true });
    const instance = await startOn(started);
    expect(fake.record[0]?.resource).toMatchObject({ scheduling: { preemptible: true, onHostMaintenance: 'TERMINATE' } });
    await instance.upload(Buffer.from('echo ready; sleep 600; echo not reached'), { signal: never });
    const output = new CollectingWritable();
    const running = instance.run({ output, signal: never });
    await output.until('ready');
    await fake.preempt(instance.id);
    const error = await running.catch((err: unknown) => err);
    expect(error).toBeInstanceOf(ConnectionLostError);
    expect((error as ConnectionLostError).requeue).toBe(true);
    expect((error as Error).message).toContain('preempted');
    await instance.destroy();
    expect(fake.record[0]).toMatchObject({ preempted: true, deleted: true });
  });

  it('selects the newest image matching the pattern, IMAGE_<LANGUAGE> overriding IMAGE_DEFAULT', async () => {
    fake.images = [
      { name: 'travis-ci-garnet-trusty-1600000000', creationTimestamp: '2020-09-13T12:26:40.000-07:00' },
      { name: 'travis-ci-garnet-trusty-1500000000', creationTimestamp: '2021-07-14T02:40:00.000-07:00' },
      { name: 'travis-ci-garnet-trusty-1700000000', creationTimestamp: '2023-11-14T22:13:20.000-07:00', status: 'PENDING' },
      { name: 'travis-ci-ruby-xenial-1', creationTimestamp: '2019-01-01T00:00:00.000-07:00' },
      { name: 'travis-ci-ruby-xenial-2', creationTimestamp: '2019-02-01T00:00:00.000-07:00' },
      { name: 'other-travis-ci-garnet-trusty-9', creationTimestamp: '2030-01-01T00:00:00.000-07:00' },
    ];
    // Settings as the loader hands them: TRAVIS_WORKER_GCE_IMAGE_DEFAULT=travis-ci-garnet-trusty.%2B arrives unescaped.
    const started = makeBackend({ imageDefault: 'travis-ci-garnet-trusty.+', images: { ruby: 'travis-ci-ruby-xenial-.+' } });
    const plain = await startOn(started, { language: 'go' });
    expect(plain.imageName).toBe('travis-ci-garnet-trusty-1500000000');
    const ruby = await startOn(started, { language: 'ruby' });
    expect(ruby.imageName).toBe('travis-ci-ruby-xenial-2');
    const sources = fake.record.map((record) => (record.resource['disks'] as { initializeParams: { sourceImage: string } }[])[0]?.initializeParams.sourceImage);
    expect(sources).toEqual([expect.stringMatching(/\/global\/images\/travis-ci-garnet-trusty-1500000000$/), expect.stringMatching(/\/travis-ci-ruby-xenial-2$/)]);
  });

  it('retries a delete whose answer was lost with the same request id, so GCE answers with the first delete', async () => {
    const instance = await startOn(makeBackend());
    fake.inject('instances.delete', 'drop');
    await instance.destroy();
    const deletes = fake.requests.filter((request) => request.operation === 'instances.delete');
    const requestIds = deletes.map((request) => new URL(request.path, 'http://fake').searchParams.get('requestId'));
    expect(requestIds).toHaveLength(2);
    expect(requestIds[0]).toMatch(/^[0-9a-f-]{36}$/);
    expect(requestIds[1]).toBe(requestIds[0]);
    // The retry got the first delete's operation: the VM was deleted once.
    expect(deletes.map((request) => request.status)).toEqual([0, 200]);
    expect(fake.record[0]?.deleteRequests).toBe(1);
  });

  it('sends the delete again when a delete reports done but the VM stays (lost delete)', async () => {
    const started = makeBackend();
    const instance = await startOn(started);
    fake.lostDeletes = 1;
    await instance.destroy();
    expect(fake.record[0]).toMatchObject({ deleted: true, deleteRequests: 2 });
    await instance.destroy(); // idempotent
    expect(fake.record[0]?.deleteRequests).toBe(2);
  });

  it("takes project and zone from the metadata server, and the worker VM's own network and subnetwork, when they are not set", async () => {
    fake.networks.push({ project: fake.project, name: 'ci-net', mode: 'auto' });
    const network = `https://www.googleapis.com/compute/v1/projects/${fake.project}/global/networks/ci-net`;
    const subnetwork = `https://www.googleapis.com/compute/v1/projects/${fake.project}/regions/us-central1/subnetworks/ci-net`;
    fake.workerVm({ name: 'mayfly-worker-1', zone: 'us-central1-b', network, subnetwork });
    const started = makeBackend({ projectId: '', zones: [], network: '' });
    await startOn(started);
    expect(fake.record[0]?.zone).toBe('us-central1-b');
    expect(fake.record[0]?.resource).toMatchObject({ networkInterfaces: [{ network, subnetwork }] });
  });

  it('fails with a ConfigError naming TRAVIS_WORKER_GCE_PROJECT_ID when there is no project and no metadata server', async () => {
    const closed = createServer();
    closed.listen(0, '127.0.0.1');
    await once(closed, 'listening');
    const port = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    const started = makeBackend({ projectId: '', metadataHost: `127.0.0.1:${port}` });
    const error = await started.backend.start(testAttributes(), started.options()).catch((err: unknown) => err);
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as Error).message).toContain('TRAVIS_WORKER_GCE_PROJECT_ID');
  });

  it('never writes the job key to disk', async () => {
    const since = Date.now();
    const started = makeBackend();
    const instance = await startOn(started);
    expect((await runScript(instance, 'exit 0')).exitCode).toBe(0);
    const publicBlob = (fake.record[0]?.metadata['ssh-keys'] ?? '').split(' ')[1] ?? '';
    expect(publicBlob).toMatch(/^AAAA/);
    // The key's bytes in any base64 alignment, so a private key file (which embeds the public key) is caught too.
    const needles = base64Variants(Buffer.from(publicBlob, 'base64'));
    // The places a backend could write to: temp files, ~/.ssh, the working directory.
    const suspects = [tmpdir(), join(homedir(), '.ssh'), process.cwd()]
      .flatMap((dir) => filesChangedSince(dir, since))
      .filter((file) => {
        let text: string;
        try {
          text = readFileSync(file, 'latin1');
        } catch {
          return false; // gone meanwhile (another test's file)
        }
        // PEM-style files wrap their base64 in lines.
        const joined = text.replace(/\s+/g, '');
        return needles.some((needle) => text.includes(needle) || joined.includes(needle));
      });
    expect(suspects).toEqual([]);
  });
});

describe('gce backend in a worker on RabbitMQ', () => {
  const QUEUE = 'builds.gce';
  const amqp = useAmqpWorker(QUEUE);
  let buildApi: FakeBuildApi;

  beforeAll(async () => {
    buildApi = await startBuildApi('token', (jobId) => `echo "job ${jobId} on $(hostname)"; exit 0`);
  });

  afterAll(() => {
    buildApi?.close();
  });

  function start(extra: Record<string, string> = {}): Promise<TestWorker> {
    return amqp.start({ TRAVIS_WORKER_BUILD_API_URI: buildApi.uri, ...gceEnv(fake, extra) });
  }

  function payload(id: number, language = 'ruby'): string {
    return JSON.stringify({
      type: 'test',
      vm_type: 'default',
      queue: QUEUE,
      uuid: `uuid-${id}`,
      config: { language, os: 'linux', group: 'stable', dist: 'xenial' },
      job: { id, number: '1.1', commit: 'abc', branch: 'main', pull_request: false, queued_at: '2024-01-01T00:00:00Z' },
      source: { id: 1, number: '1', event_type: 'push' },
      repository: { id: 9, slug: 'octo/gce' },
      timeouts: { hard_limit: 600, log_silence: null },
    });
  }

  it('runs a job from RabbitMQ on a fresh VM and reports it passed, with boot progress in the log', async () => {
    fake.images.push({ name: 'travis-ci-ruby-xenial-7', creationTimestamp: '2001-01-01T00:00:00.000-07:00' });
    const w = await start({ TRAVIS_WORKER_GCE_IMAGE_RUBY: 'travis-ci-ruby-xenial.%2B', TRAVIS_WORKER_PROGRESS_TYPE: 'text' });
    const done = w.jobDone(9101);
    await publishRaw(amqp.vhost.uri, '', QUEUE, payload(9101));
    expect((await done).result).toEqual({ outcome: 'finished', state: 'passed' });
    const states = await drain(amqp.vhost.uri, 'reporting.jobs.builds', await messageCount(amqp.vhost.uri, 'reporting.jobs.builds'), AbortSignal.timeout(20_000));
    expect(states.map((m) => (m.body as { state: string }).state)).toEqual(['received', 'started', 'passed']);
    const [record] = fake.record;
    expect(record?.labels['travis-job-id']).toBe('9101');
    expect((record?.resource['disks'] as { initializeParams: { sourceImage: string } }[])[0]?.initializeParams.sourceImage).toMatch(/travis-ci-ruby-xenial-7$/);
    const logs = await drain(amqp.vhost.uri, 'reporting.jobs.logs', await messageCount(amqp.vhost.uri, 'reporting.jobs.logs'), AbortSignal.timeout(20_000));
    const text = logs.map((m) => (m.body as { log: string }).log).join('');
    expect(text).toContain(`Starting instance ${record?.name} in us-central1-a`);
    expect(text).toContain('job 9101 on ');
    expect(record?.deleted).toBe(true);
  });

  it("reports vm_size as travis' gce backend rewrites it: the machine type of a known size, premium for premium jobs, a GPU size as asked", async () => {
    const w = await start();
    const jobs = [
      { id: 9201, vm_size: 'large', expected: 'n2-standard-4' },
      { id: 9202, vm_type: 'premium', expected: 'premium' },
      { id: 9203, vm_size: 'gpu-medium', expected: 'gpu-medium' },
    ];
    for (const { id, vm_size, vm_type } of jobs) {
      const done = w.jobDone(id);
      await publishRaw(amqp.vhost.uri, '', QUEUE, JSON.stringify({ ...JSON.parse(payload(id)), ...(vm_size ? { vm_size } : {}), ...(vm_type ? { vm_type } : {}) }));
      expect((await done).result).toEqual({ outcome: 'finished', state: 'passed' });
    }
    const states = await drain(amqp.vhost.uri, 'reporting.jobs.builds', await messageCount(amqp.vhost.uri, 'reporting.jobs.builds'), AbortSignal.timeout(20_000));
    const sizes = (id: number): (string | undefined)[] =>
      states.map((m) => m.body as { id: number; vm_size?: string }).filter((body) => body.id === id).map((body) => body.vm_size);
    // `received` goes out before the VM exists, with the payload's own value, as in travis.
    expect(jobs.map(({ id }) => sizes(id))).toEqual([
      ['large', 'n2-standard-4', 'n2-standard-4'],
      [undefined, 'premium', 'premium'],
      ['gpu-medium', 'gpu-medium', 'gpu-medium'],
    ]);
  });

  it('requeues a job whose VM does not boot within the startup timeout, and deletes the VM', async () => {
    fake.bootMs = 10 * 60_000;
    const w = await start({ TRAVIS_WORKER_STARTUP_TIMEOUT: '1s' });
    const done = w.jobDone(9102);
    await publishRaw(amqp.vhost.uri, '', QUEUE, payload(9102));
    expect((await done).result).toMatchObject({ outcome: 'requeued' });
    expect(fake.record).toHaveLength(1);
    expect(fake.record[0]?.deleted).toBe(true);
  });
});

const SKIPPED_DIRS = ['mayfly-sshd-', 'bash_jobs.', 'node_modules', '.git'];

/** `bytes` as raw text and as base64 at each of the three alignments (without the edge characters that depend on neighbours). */
function base64Variants(bytes: Buffer): string[] {
  const variants = [bytes.toString('latin1')];
  for (const shift of [0, 1, 2]) {
    const encoded = Buffer.concat([Buffer.alloc(shift), bytes]).toString('base64');
    variants.push(encoded.slice([0, 2, 3][shift], -4));
  }
  return variants;
}

/** Files under `dir` (recursively) modified at or after `since`, except the fake VMs' own sshd directories. */
function filesChangedSince(dir: string, since: number): string[] {
  let entries: string[];
  try {
    entries = readdirSync(dir);
  } catch {
    return [];
  }
  return entries.flatMap((entry) => {
    // A fake VM's side (its authorized_keys) is the VM's disk, not the worker's; the rest is not ours to read.
    if (SKIPPED_DIRS.some((prefix) => entry.startsWith(prefix))) return [];
    const path = join(dir, entry);
    try {
      const stat = statSync(path);
      if (stat.isDirectory()) return filesChangedSince(path, since);
      return stat.isFile() && stat.mtimeMs >= since - 1000 && stat.size < 1_000_000 ? [path] : [];
    } catch {
      return [];
    }
  });
}
