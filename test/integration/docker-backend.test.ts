/**
 * The whole worker on the docker backend against the real test engine: jobs
 * published to RabbitMQ in travis' format run in containers (over SSH, and
 * natively), and what comes out on the reporting queues is checked. Also the
 * failures that must requeue: no free cores, an image the engine lacks, a
 * container killed under a running script. After every test no container
 * of this file's worker is left (found by its labels).
 */
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest';
import { LABELS, containerName } from '../../backends/docker/backend.js';
import type { DockerEngine } from '../../backends/docker/engine.js';
import { z } from 'zod';
import { DockerApiError } from '../../backends/docker/api.js';
import { definition as docker } from '../../backends/docker/index.js';
import { NoCapacityError } from '../../src/errors.js';
import { silentLogger } from '../../src/logger.js';
import { formatGoDuration } from '../../src/config/formats.js';
import { MAX_TIMER_MS } from '../../src/util/timers.js';
import { testAttributes } from '../helpers/attributes.js';
import { testBackendContext } from '../helpers/backend-context.js';
import { captureLog, type CapturedLog } from '../helpers/log-capture.js';
import {
  TEST_DOCKER_NETWORK,
  TEST_DOCKER_SOCKET,
  containersOf,
  describeWithDocker,
  dockerUnavailable,
  removeContainersOf,
  testDockerSettings,
  testEngine,
  testWorkerName,
} from '../helpers/docker.js';
import { drain, messageCount, publishRaw, type DrainedMessage } from '../helpers/rabbitmq.js';
import type { TestWorker } from '../helpers/worker.js';
import { startBuildApi, type FakeBuildApi } from '../helpers/build-api.js';
import { useAmqpWorker } from '../helpers/amqp-worker.js';

const unavailable = await dockerUnavailable();

const QUEUE = 'builds.docker';
const REPOSITORY = 'octo/docker-it';
const workerName = testWorkerName();
/** Job ids of this file: distinct from every other file's, so container names never collide. */
let nextJobId = 730_000 + Math.floor(Math.random() * 10_000) * 10;
let engine: DockerEngine;
let buildApi: FakeBuildApi;
let log: CapturedLog;

const inspectSchema = z.object({
  Config: z.object({ Hostname: z.string(), Labels: z.record(z.string(), z.string()) }),
  HostConfig: z.record(z.string(), z.unknown()),
});

const timeout = (): AbortSignal => AbortSignal.timeout(25_000);

describeWithDocker('docker backend through the worker (real engine, real broker)', unavailable, () => {
  beforeAll(async () => {
    engine = testEngine();
    buildApi = await startBuildApi();
  });

  afterAll(async () => {
    buildApi?.close();
    if (engine !== undefined) {
      await removeContainersOf(engine, workerName);
      await engine.api.close();
    }
  });

  afterEach(async () => {
    // Nothing left behind, whatever the test did (runs after the worker is stopped: registered first).
    expect(await containersOf(engine, workerName)).toEqual([]);
  });
  const amqp = useAmqpWorker(QUEUE);

  function start(env: Record<string, string> = {}): Promise<TestWorker> {
    log = captureLog();
    return amqp.start(
      {
        TRAVIS_WORKER_BUILD_API_URI: buildApi.uri,
        TRAVIS_WORKER_HOSTNAME: workerName,
        TRAVIS_WORKER_PROVIDER_NAME: 'docker',
        TRAVIS_WORKER_DOCKER_ENDPOINT: `unix://${TEST_DOCKER_SOCKET}`,
        TRAVIS_WORKER_DOCKER_NETWORK: TEST_DOCKER_NETWORK,
        TRAVIS_WORKER_DOCKER_MEMORY: '512MiB',
        TRAVIS_WORKER_DOCKER_CPUS: '1',
        TRAVIS_WORKER_DOCKER_CPU_SET_SIZE: '2',
        TRAVIS_WORKER_DOCKER_STOP_TIMEOUT: '2s',
        TRAVIS_WORKER_DOCKER_INSPECT_INTERVAL: '100ms',
        ...env,
      },
      log.logger,
    );
  }

  function payload(id: number, config: Record<string, unknown> = {}): string {
    return JSON.stringify({
      type: 'test',
      vm_type: 'default',
      queue: QUEUE,
      uuid: `uuid-${id}`,
      config: { language: 'ruby', os: 'linux', group: 'stable', dist: 'bookworm', ...config },
      env_vars: [],
      job: { id, number: '1.1', commit: 'abc', branch: 'main', pull_request: false, queued_at: '2026-11-22T00:00:00Z' },
      source: { id: 1, number: '1', event_type: 'push' },
      repository: { id: 2, slug: REPOSITORY },
      ssh_key: null,
      timeouts: { hard_limit: 600, log_silence: null },
    });
  }

  function job(script: string): number {
    nextJobId += 1;
    buildApi.scripts.set(nextJobId, script);
    return nextJobId;
  }

  const publish = (body: string): Promise<void> => publishRaw(amqp.vhost.uri, '', QUEUE, body);
  const statesOf = (messages: DrainedMessage[]): string[] => messages.map((m) => (m.body as { state: string }).state);
  const logTextOf = (messages: DrainedMessage[]): string => messages.map((m) => (m.body as { log: string }).log).join('');
  const drainAll = async (queue: string): Promise<DrainedMessage[]> => drain(amqp.vhost.uri, queue, await messageCount(amqp.vhost.uri, queue), timeout());

  /** Consume log parts until their text contains `text`. */
  async function logUntil(text: string): Promise<string> {
    const parts: DrainedMessage[] = [];
    const signal = timeout();
    while (!logTextOf(parts).includes(text)) parts.push(...(await drain(amqp.vhost.uri, 'reporting.jobs.logs', 1, signal)));
    return logTextOf(parts);
  }

  it.each([
    ['over ssh', {}],
    ['natively', { TRAVIS_WORKER_DOCKER_NATIVE: 'true' }],
  ])('runs a job from RabbitMQ in a container %s: log, states, and the container gone', async (_mode, env) => {
    const w = await start({ ...env, TRAVIS_WORKER_PROGRESS_TYPE: 'text' });
    const jobId = job('echo "hello from $(hostname) as $(id -un)"; test -d /run && echo has-run; exit 0');
    const done = w.jobDone(jobId);
    await publish(payload(jobId));
    expect((await done).result).toEqual({ outcome: 'finished', state: 'passed' });
    expect(statesOf(await drainAll('reporting.jobs.builds'))).toEqual(['received', 'started', 'passed']);
    const text = logTextOf(await drainAll('reporting.jobs.logs'));
    expect(text).toContain(`Creating container ${containerName({ jobId, repository: REPOSITORY })} from image travis:default`);
    expect(text).toContain(`hello from ${containerName({ jobId, repository: REPOSITORY })} as travis`);
    expect(text).toContain('has-run');
    expect(text).toMatch(/instance: [0-9a-f]{12} travis:default/);
  });

  it('requeues a job when every core is taken, and gives the cores back when jobs end', async () => {
    const w = await start({ TRAVIS_WORKER_POOL_SIZE: '2', TRAVIS_WORKER_DOCKER_CPUS: '2' });
    const holder = job('echo holding; sleep 600');
    const holderDone = w.jobDone(holder);
    await publish(payload(holder));
    await logUntil('holding');

    const squeezed = job('echo must not run');
    const squeezedDone = w.jobDone(squeezed);
    await publish(payload(squeezed));
    expect((await squeezedDone).result).toEqual({ outcome: 'requeued', cause: 'E_NO_CAPACITY', instanceReady: false });
    expect(log.lines.some((line) => String(line.err).includes('no 2 free cores'))).toBe(true);
    // Only the holder's container exists.
    expect(await containersOf(engine, workerName)).toHaveLength(1);

    await publishRaw(amqp.vhost.uri, 'worker.commands', '', JSON.stringify({ type: 'cancel_job', job_id: holder, source: 'api', reason: 'done holding' }));
    expect((await holderDone).result).toEqual({ outcome: 'finished', state: 'cancelled' });

    // Both cores are free again: a job that needs both runs.
    const after = job('echo cores are back');
    const afterDone = w.jobDone(after);
    await publish(payload(after));
    expect((await afterDone).result).toEqual({ outcome: 'finished', state: 'passed' });
    const states = (await drainAll('reporting.jobs.builds')).map((m) => m.body as { id: number; state: string });
    expect(states.filter((s) => s.id === squeezed).map((s) => s.state)).toEqual(['received', 'reset']);
  });

  it('requeues a job whose image the engine does not have, with an error naming the image', async () => {
    const w = await start();
    const jobId = job('echo must not run');
    const done = w.jobDone(jobId);
    await publish(payload(jobId, { image_name: 'mayfly-no-such-image:42' }));
    expect((await done).result).toEqual({ outcome: 'requeued', cause: 'E_INSTANCE_START', instanceReady: false });
    const failure = log.lines.find((line) => line.msg === 'job failed on infrastructure, requeueing');
    expect(String(failure?.err)).toMatch(/image mayfly-no-such-image:42 does not exist on the Docker engine at unix:\/\//);
    expect(statesOf(await drainAll('reporting.jobs.builds'))).toEqual(['received', 'reset']);
  });

  it.each([
    ['over ssh', {}],
    ['natively', { TRAVIS_WORKER_DOCKER_NATIVE: 'true' }],
  ])('requeues a job whose container is killed while the script runs (%s)', async (_mode, env) => {
    const w = await start(env);
    const jobId = job('echo running; sleep 600; echo not reached');
    const done = w.jobDone(jobId);
    await publish(payload(jobId));
    await logUntil('running');
    const [container] = await engine.listContainers([`${LABELS.jobId}=${jobId}`, `${LABELS.worker}=${workerName}`], timeout());
    expect(container).toBeDefined();
    await engine.killContainer(container?.Id ?? '', timeout());
    expect((await done).result).toEqual({ outcome: 'requeued', cause: 'E_CONNECTION_LOST', instanceReady: true });
    expect(statesOf(await drainAll('reporting.jobs.builds'))).toEqual(['received', 'started', 'reset']);
  });

  it('makes each container as configured: labels, name, cpuset, memory, shm, tmpfs; a stale one of the same name goes first', async () => {
    const backend = docker.create(
      testDockerSettings({ containerLabels: 'team:ci', tmpfsMap: '/run:rw,exec+/scratch:rw,size=1m', shm: '32MiB', cpus: 2 }),
      testBackendContext({ hostname: workerName }),
    );
    const attributes = testAttributes({ jobId: job('true'), repository: REPOSITORY, hardTimeoutMs: 60 * 60_000 });
    const name = containerName(attributes);
    // What an earlier attempt at the same job left behind.
    const stale = await engine.createContainer(name, { Image: 'travis:default', Cmd: ['/sbin/init'], Hostname: 'x', Domainname: '', Labels: {}, HostConfig: { Binds: [], Privileged: false, Tmpfs: {} } }, timeout());
    const progress: string[] = [];
    const instance = await backend.start(attributes, { signal: timeout(), progress: (line) => progress.push(line), logger: silentLogger, recordPhase: () => {} });
    try {
      expect(await engine.inspectContainer(stale, timeout())).toBeUndefined();
      expect(progress).toEqual([`Creating container ${name} from image travis:default`, `Starting container ${name}`]);
      const [listed] = await engine.listContainers([`${LABELS.jobId}=${attributes.jobId}`, `${LABELS.repository}=${REPOSITORY}`, `${LABELS.worker}=${workerName}`, 'team=ci'], timeout());
      expect(listed?.Names).toEqual([`/${name}`]);
      const inspected = await engine.api.json('test.inspect', inspectSchema, { method: 'GET', path: `/containers/${listed?.Id ?? ''}/json`, signal: timeout() });
      expect(Date.parse(inspected.Config.Labels[LABELS.leaseExpiresAt] ?? '')).toBeGreaterThan(Date.now() + 60 * 60_000);
      expect(inspected.Config.Hostname).toBe(name);
      expect(inspected.HostConfig).toMatchObject({ CpusetCpus: '0,1', Memory: 512 * 2 ** 20, ShmSize: 32 * 2 ** 20, Tmpfs: { '/run': 'rw,exec', '/scratch': 'rw,size=1m' } });
      // Both cores are this job's: another has no room until it is destroyed.
      await expect(backend.start(testAttributes({ jobId: job('true'), repository: REPOSITORY }), { signal: timeout(), progress: () => {}, logger: silentLogger, recordPhase: () => {} })).rejects.toBeInstanceOf(NoCapacityError);
    } finally {
      await instance.destroy();
      await backend.close();
    }
    expect(await containersOf(engine, workerName)).toEqual([]);
  });

  // The destroy deadline is the grace period plus a margin: past the longest a timer waits, it fired at once.
  it('stops and removes the container when the stop timeout is at its maximum', async () => {
    const w = await start({ TRAVIS_WORKER_DOCKER_STOP_TIMEOUT: formatGoDuration(MAX_TIMER_MS) });
    // A job that ran over SSH: the container's sshd is up, and stops at SIGTERM.
    const jobId = job('echo up; exit 0');
    const done = w.jobDone(jobId);
    await publish(payload(jobId));
    expect((await done).result).toEqual({ outcome: 'finished', state: 'passed' });
    expect(await containersOf(engine, workerName)).toEqual([]);
    expect(log.lines.filter((line) => line.level === 'warn' || line.level === 'error').map((line) => line.msg)).toEqual([]);
  });

  it('treats a container that is gone already as destroyed', async () => {
    const backend = docker.create(testDockerSettings({ native: true }), testBackendContext({ hostname: workerName }));
    const instance = await backend.start(testAttributes({ jobId: job('true'), repository: REPOSITORY }), { signal: timeout(), progress: () => {}, logger: silentLogger, recordPhase: () => {} });
    const [container] = await engine.listContainers([`${LABELS.worker}=${workerName}`], timeout());
    await engine.removeContainer(container?.Id ?? '', timeout());
    await instance.destroy();
    await backend.close();
  });

  it("reads the engine's error answers: status and message", async () => {
    const failure = await engine
      .createContainer(`mayfly-error-probe-${workerName}`, { Image: 'mayfly-no-such-image:1', Cmd: ['true'], Hostname: 'x', Domainname: '', Labels: { [LABELS.worker]: workerName }, HostConfig: { Binds: [], Privileged: false, Tmpfs: {} } }, timeout())
      .then(() => undefined, (err: unknown) => err);
    expect(failure).toBeInstanceOf(DockerApiError);
    expect(failure).toMatchObject({ operation: 'containers.create', status: 404, engineMessage: expect.stringMatching(/no such image: mayfly-no-such-image:1/i) });
    await expect(engine.startContainer('no-such-container', timeout())).rejects.toMatchObject({ status: 404, engineMessage: 'No such container: no-such-container' });
  });
});
