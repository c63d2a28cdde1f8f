/**
 * The warm pool around the docker backend on the real test engine: it
 * fills, a job of the same shape gets a warm container (a hit) that runs
 * its script over the connection the probe opened, and the pool refills; a
 * job of another shape misses. Idle containers are replaced when too old or
 * when their tag now names another image; a container that fails its
 * readiness probe is destroyed; an open circuit breaker stops pool boots;
 * the reaper spares pooled containers of this process and takes those of a
 * process that is gone (reaper.test.ts kills a worker with a full pool);
 * draining leaves nothing. On gce, the labels and lease of a warm VM, and a
 * hit and a miss by machine size. After every test nothing is left.
 */
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { LABELS } from '../../backends/docker/backend.js';
import type { DockerEngine } from '../../backends/docker/engine.js';
import { definition as docker } from '../../backends/docker/index.js';
import type { DockerSettings } from '../../backends/docker/settings.js';
import { definition as gce } from '../../backends/gce/index.js';
import { LABELS as GCE_LABELS } from '../../backends/gce/instance-spec.js';
import { CircuitBreaker } from '../../src/backend/breaker.js';
import type { Instance, StartAttributes, StartOptions } from '../../src/backend/contract.js';
import type { WorkerStatus } from '../../src/lifecycle/status.js';
import { silentLogger } from '../../src/logger.js';
import { HeldInstances } from '../../src/reaper/held.js';
import { reapOnce } from '../../src/reaper/reaper.js';
import type { WarmPoolMetrics } from '../../src/telemetry/metrics.js';
import type { WarmPoolMode } from '../../src/warm-pool/demand.js';
import { WARM_JOB_ID, WarmPool } from '../../src/warm-pool/pool.js';
import type { EvictReason } from '../../src/warm-pool/types.js';
import { FakeGce } from '../fakes/gce-server.js';
import { gceSettings, travisImages } from '../fakes/gce-settings.js';
import { useAmqpWorker } from '../helpers/amqp-worker.js';
import { testAttributes } from '../helpers/attributes.js';
import { startBuildApi, type FakeBuildApi } from '../helpers/build-api.js';
import { testBackendContext } from '../helpers/backend-context.js';
import { CollectingWritable } from '../helpers/collect.js';
import {
  TEST_DOCKER_NETWORK,
  TEST_DOCKER_SOCKET,
  TEST_IMAGE,
  containersOf,
  describeWithDocker,
  dockerUnavailable,
  removeContainersOf,
  testDockerSettings,
  testEngine,
  testWorkerName,
} from '../helpers/docker.js';
import { drain, messageCount, publishRaw } from '../helpers/rabbitmq.js';

const unavailable = await dockerUnavailable();
const run = promisify(execFile);
/** The docker CLI against the test engine, for what the backend never does (tagging, committing images). */
const dockerCli = (...args: string[]): Promise<{ stdout: string }> => run('docker', ['-H', `unix://${TEST_DOCKER_SOCKET}`, ...args]);

const workerName = testWorkerName();
const HOUR = 3_600_000;
let engine: DockerEngine;

/** What the pool recorded in its metrics. */
interface Recorded {
  hits: string[];
  misses: string[];
  left: string[];
  bootFailures: string[];
}

function recordingMetrics(): WarmPoolMetrics & { recorded: Recorded } {
  const recorded: Recorded = { hits: [], misses: [], left: [], bootFailures: [] };
  return {
    recorded,
    hit: (shape) => recorded.hits.push(shape),
    miss: (shape) => recorded.misses.push(shape),
    left: (how) => recorded.left.push(how),
    bootFailed: (stage) => recorded.bootFailures.push(stage),
  };
}

interface PoolFixture {
  pool: WarmPool;
  held: HeldInstances;
  breaker: CircuitBreaker;
  metrics: ReturnType<typeof recordingMetrics>;
}

interface PoolOptions {
  size?: number;
  mode?: WarmPoolMode;
  maxAgeMs?: number;
  bootTimeoutMs?: number;
  checkIntervalMs?: number;
  defaults?: StartAttributes;
  settings?: Partial<DockerSettings>;
  breaker?: CircuitBreaker;
}

const jobOptions = (): StartOptions => ({
  signal: AbortSignal.timeout(30_000),
  progress: () => {},
  logger: silentLogger,
  recordPhase: () => {},
});

/** One event of the pool, the first whose arguments pass `match`. */
async function poolEvent<K extends 'ready' | 'evicted' | 'boot-failed'>(
  pool: WarmPool,
  event: K,
  match: (...args: unknown[]) => boolean = () => true,
): Promise<unknown[]> {
  const signal = AbortSignal.timeout(30_000);
  for (;;) {
    const args = (await once(pool.events, event, { signal })) as unknown[];
    if (match(...args)) return args;
  }
}

/** Upload and run `script` on `instance`, returning its output. */
async function runOn(instance: Instance, script: string): Promise<string> {
  await instance.upload(Buffer.from(script), { signal: AbortSignal.timeout(20_000) });
  const output = new CollectingWritable();
  const result = await instance.run({ output, signal: AbortSignal.timeout(20_000) });
  expect(result.exitCode).toBe(0);
  return output.text;
}

/** Resolves once the pool holds `count` idle instances. */
async function untilIdle(pool: WarmPool, count: number): Promise<void> {
  while (idleIds(pool).length < count) await poolEvent(pool, 'ready');
}

const readyOnce = async (pool: WarmPool): Promise<string> => (await poolEvent(pool, 'ready'))[0] as string;

/** Fill `pool`; resolves with the first instance that joins it. */
async function fillOne(pool: WarmPool): Promise<string> {
  const ready = readyOnce(pool);
  await pool.fill();
  return ready;
}
const idleIds = (pool: WarmPool): string[] => pool.status().shapes.flatMap((shape) => shape.idle.map((idle) => idle.id));

describeWithDocker('the warm pool on docker (real engine)', unavailable, () => {
  let fixtures: PoolFixture[] = [];

  beforeAll(() => {
    engine = testEngine();
  });
  afterAll(async () => {
    await removeContainersOf(engine, workerName);
    await engine.api.close();
  });
  beforeEach(() => {
    fixtures = [];
  });
  afterEach(async () => {
    for (const { pool, breaker } of fixtures) {
      await pool.close();
      breaker.dispose();
    }
    // Draining (close) destroyed every warm container; the jobs' own were destroyed by the tests.
    expect(await containersOf(engine, workerName)).toEqual([]);
  });

  function makePool(options: PoolOptions = {}): PoolFixture {
    const held = new HeldInstances();
    const backend = held.wrap(
      docker.create(testDockerSettings({ cpus: 0, ...options.settings }), testBackendContext({ hostname: workerName })),
    );
    const breaker = options.breaker ?? new CircuitBreaker({ threshold: 5, backoffMs: HOUR, maxBackoffMs: HOUR, logger: silentLogger });
    const metrics = recordingMetrics();
    const { shape } = backend;
    if (shape === undefined) throw new Error('the docker backend tells no shapes');
    const pool = new WarmPool({
      backend: { ...backend, shape },
      size: options.size ?? 1,
      mode: options.mode ?? 'fixed',
      maxAgeMs: options.maxAgeMs ?? HOUR,
      windowMs: HOUR,
      hardTimeoutMs: 10 * 60_000,
      bootTimeoutMs: options.bootTimeoutMs ?? 30_000,
      defaults: options.defaults ?? testAttributes({ jobId: WARM_JOB_ID }),
      breaker,
      logger: silentLogger,
      metrics,
      recordPhase: () => {},
      ...(options.checkIntervalMs === undefined ? {} : { checkIntervalMs: options.checkIntervalMs }),
    });
    const fixture = { pool, held, breaker, metrics };
    fixtures.push(fixture);
    return fixture;
  }

  it('hands a warm container to a job of the same shape (a hit), which runs its script there, and refills', async () => {
    const { pool, metrics } = makePool();
    const warm = await fillOne(pool);
    expect(pool.status().shapes).toEqual([
      expect.objectContaining({ target: 1, booting: 0, idle: [expect.objectContaining({ id: warm, image: TEST_IMAGE })] }),
    ]);

    const refilled = readyOnce(pool);
    const instance = await pool.start(testAttributes({ jobId: 1 }), jobOptions());
    expect(instance.id).toBe(warm);
    expect(metrics.recorded.hits).toHaveLength(1);
    expect(metrics.recorded.left).toEqual(['used']);
    expect(await runOn(instance, 'echo "warm as $(id -un)"')).toContain('warm as travis');
    // The pool boots a replacement for the one it gave away.
    expect(await refilled).not.toBe(warm);
    await instance.destroy();
    expect(idleIds(pool)).toHaveLength(1);
  });

  it('destroys a warm container that died while idle, and gives the job a new one', async () => {
    const { pool, metrics } = makePool();
    const warm = await fillOne(pool);
    await engine.killContainer(warm, AbortSignal.timeout(10_000));
    const evicted = poolEvent(pool, 'evicted', (id) => id === warm);
    const instance = await pool.start(testAttributes({ jobId: 6 }), jobOptions());
    try {
      expect((await evicted)[1]).toBe<EvictReason>('dead');
      expect(instance.id).not.toBe(warm);
      expect(metrics.recorded).toMatchObject({ hits: [], misses: [expect.stringContaining(`image=${TEST_IMAGE}`)], left: ['dead'] });
      expect(await runOn(instance, 'echo alive')).toContain('alive');
    } finally {
      await instance.destroy();
    }
  });

  it('gives a job of another shape a cold start (a miss), leaving the warm one be', async () => {
    const tag = `warm-other:${randomBytes(4).toString('hex')}`;
    await dockerCli('tag', TEST_IMAGE, tag);
    try {
      const { pool, metrics } = makePool();
      const warm = await fillOne(pool);
      const instance = await pool.start(testAttributes({ jobId: 2, imageName: tag }), jobOptions());
      try {
        expect(instance.id).not.toBe(warm);
        expect(metrics.recorded.misses).toEqual([expect.stringContaining(`image=${tag}`)]);
        expect(metrics.recorded.hits).toEqual([]);
        expect(idleIds(pool)).toEqual([warm]);
      } finally {
        await instance.destroy();
      }
    } finally {
      await dockerCli('rmi', tag);
    }
  });

  it('makes a warm container give way to a job that finds no free cores', async () => {
    const tag = `warm-cores:${randomBytes(4).toString('hex')}`;
    await dockerCli('tag', TEST_IMAGE, tag);
    try {
      // One core per container out of two: the warm container holds one.
      const { pool, metrics, breaker } = makePool({ settings: { cpus: 1, cpuSetSize: 2 } });
      const warm = await fillOne(pool);
      const first = await pool.start(testAttributes({ jobId: 4, imageName: tag }), jobOptions());
      const evicted = poolEvent(pool, 'evicted', (id) => id === warm);
      const second = await pool.start(testAttributes({ jobId: 5, imageName: tag }), jobOptions());
      try {
        expect((await evicted)[1]).toBe<EvictReason>('capacity');
        expect(metrics.recorded.left).toEqual(['capacity']);
        expect(metrics.recorded.misses).toHaveLength(2);
        // The pool's own boots that find no room are no outage of the backend.
        expect(breaker.consecutiveFailures).toBe(0);
      } finally {
        await Promise.all([first.destroy(), second.destroy()]);
      }
    } finally {
      await dockerCli('rmi', tag);
    }
  });

  it('replaces an idle container once it reaches the maximum age', async () => {
    const { pool, metrics } = makePool({ maxAgeMs: 1_500 });
    const old = await fillOne(pool);
    const [, reason] = await poolEvent(pool, 'evicted', (id) => id === old);
    expect(reason).toBe<EvictReason>('age');
    const fresh = await readyOnce(pool);
    expect(fresh).not.toBe(old);
    expect(metrics.recorded.left).toContain('age');
  });

  it('replaces idle containers whose tag now names another image', async () => {
    const language = `warm${randomBytes(4).toString('hex')}`;
    const tag = `travis:${language}`;
    // Another image id with the same contents: a commit of a container made from it.
    const { stdout: made } = await dockerCli('create', TEST_IMAGE, '/sbin/init');
    const newer = `warm-newer:${language}`;
    await dockerCli('commit', made.trim(), newer);
    await dockerCli('rm', made.trim());
    await dockerCli('tag', TEST_IMAGE, tag);
    try {
      const { pool } = makePool({ defaults: testAttributes({ jobId: WARM_JOB_ID, language }), checkIntervalMs: 200 });
      const ready = poolEvent(pool, 'ready');
      await pool.fill();
      const [old, oldShape] = await ready;
      await dockerCli('tag', newer, tag);
      const [, reason] = await poolEvent(pool, 'evicted', (id) => id === old);
      expect(reason).toBe<EvictReason>('image');
      const [, newShape] = await poolEvent(pool, 'ready');
      expect(newShape).not.toBe(oldShape);
      expect(pool.status().shapes.map((shape) => shape.shape)).toEqual([newShape]);
      // Its containers go before the images they run.
      await pool.drain();
    } finally {
      await dockerCli('rmi', tag, newer);
    }
  });

  it('destroys a container that fails its readiness probe, and counts it as a failed start', async () => {
    // No sshd in the container: the probe never gets an answer within the boot timeout.
    const { pool, metrics, breaker } = makePool({ settings: { cmd: 'sleep infinity' }, bootTimeoutMs: 5_000 });
    const failed = poolEvent(pool, 'boot-failed');
    await pool.fill();
    const [stage] = await failed;
    expect(stage).toBe('probe');
    expect(metrics.recorded.bootFailures).toContain('probe');
    expect(breaker.consecutiveFailures).toBeGreaterThan(0);
    expect(idleIds(pool)).toEqual([]);
    // Stop booting before looking: the next boot may be on its way.
    await pool.drain();
    expect(await containersOf(engine, workerName)).toEqual([]);
  });

  it('boots nothing while the circuit breaker is open, and fills once it closes', async () => {
    const breaker = new CircuitBreaker({ threshold: 1, backoffMs: HOUR, maxBackoffMs: HOUR, logger: silentLogger });
    breaker.recordFailure('E_INSTANCE_START');
    expect(breaker.state).toBe('open');
    const { pool } = makePool({ breaker });
    const passed = once(pool.events, 'reconciled');
    await pool.fill();
    await passed;
    expect(pool.status().shapes).toEqual([expect.objectContaining({ target: 1, booting: 0, idle: [] })]);
    expect(await containersOf(engine, workerName)).toEqual([]);

    const ready = readyOnce(pool);
    breaker.retryNow();
    breaker.recordSuccess();
    expect(breaker.state).toBe('closed');
    await ready;
  });

  it('is spared by the reaper of this process, and taken by the reaper of a process that is gone', async () => {
    const { pool, held } = makePool();
    const warm = await fillOne(pool);
    const backend = held.wrap(docker.create(testDockerSettings(), testBackendContext({ hostname: workerName })));
    const reap = (holding: HeldInstances) =>
      reapOnce(
        {
          backend: { listManaged: (s) => backend.listManaged!(s), destroyManaged: (id, s) => backend.destroyManaged!(id, s) },
          held: holding,
          hostname: workerName,
          intervalMs: HOUR,
          graceMs: 0,
          logger: silentLogger,
          metrics: { reaped: () => {}, reaperFailed: () => {} },
        },
        AbortSignal.timeout(20_000),
      );
    const [container] = await engine.listContainers([`${LABELS.worker}=${workerName}`], AbortSignal.timeout(10_000));
    expect(container?.Labels?.[LABELS.jobId]).toBe(String(WARM_JOB_ID));
    expect(container?.Labels?.[LABELS.leaseExpiresAt]).toBeDefined();

    expect((await reap(held)).reaped).toEqual([]);
    expect(idleIds(pool)).toEqual([warm]);
    // A new process of the same worker holds nothing: the container is an orphan to it.
    expect((await reap(new HeldInstances())).reaped).toEqual([{ id: warm, reason: 'orphaned' }]);
    await backend.close();
  });

  it('destroys every idle container and boot in flight when drained, and boots no more', async () => {
    const { pool, metrics } = makePool({ size: 3 });
    await fillOne(pool);
    await pool.drain();
    expect(await containersOf(engine, workerName)).toEqual([]);
    expect(metrics.recorded.left).toContain('drain');
    // A job after the drain gets a cold start of its own.
    const instance = await pool.start(testAttributes({ jobId: 3 }), jobOptions());
    await instance.destroy();
    expect(pool.status().shapes.every((shape) => shape.idle.length === 0 && shape.booting === 0)).toBe(true);
  });
});

describeWithDocker('the warm pool in a whole worker (docker, real broker)', unavailable, () => {
  const QUEUE = 'builds.warm';
  const CONTROL_AUTH = 'operator:secret';
  let buildApi: FakeBuildApi;

  beforeAll(async () => {
    engine = testEngine();
    buildApi = await startBuildApi();
  });
  afterAll(async () => {
    buildApi?.close();
    await removeContainersOf(engine, workerName);
    await engine.api.close();
  });
  afterEach(async () => {
    // Runs once the worker is stopped (registered before the fixture's own hook).
    expect(await containersOf(engine, workerName)).toEqual([]);
  });
  const amqp = useAmqpWorker(QUEUE);

  it('shows the pool on GET /worker, starts a job on a warm container, and leaves nothing once drained', async () => {
    const w = await amqp.start({
      TRAVIS_WORKER_BUILD_API_URI: buildApi.uri,
      TRAVIS_WORKER_HOSTNAME: workerName,
      TRAVIS_WORKER_PROVIDER_NAME: 'docker',
      TRAVIS_WORKER_PROGRESS_TYPE: 'text',
      TRAVIS_WORKER_DOCKER_ENDPOINT: `unix://${TEST_DOCKER_SOCKET}`,
      TRAVIS_WORKER_DOCKER_NETWORK: TEST_DOCKER_NETWORK,
      TRAVIS_WORKER_DOCKER_CPUS: '0',
      TRAVIS_WORKER_DOCKER_STOP_TIMEOUT: '2s',
      TRAVIS_WORKER_WARM_POOL_SIZE: '1',
      TRAVIS_WORKER_WARM_POOL_MODE: 'fixed',
      TRAVIS_WORKER_REMOTE_CONTROLLER_ADDR: '127.0.0.1:0',
      TRAVIS_WORKER_REMOTE_CONTROLLER_AUTH: CONTROL_AUTH,
    });
    const pool = w.worker.warmPool;
    if (pool === undefined) throw new Error('no warm pool');
    await untilIdle(pool, 1);
    const [warm] = idleIds(pool);
    const answer = await fetch(`${w.worker.controlUrl}/worker`, {
      headers: { authorization: `Basic ${Buffer.from(CONTROL_AUTH).toString('base64')}` },
    });
    expect(((await answer.json()) as WorkerStatus).warmPool).toEqual({
      mode: 'fixed',
      size: 1,
      hits: 0,
      misses: 0,
      shapes: [{ shape: expect.stringContaining(`image=${TEST_IMAGE}`), target: 1, booting: 0, idle: [expect.objectContaining({ id: warm })] }],
    });

    const jobId = 760_000 + Math.floor(Math.random() * 10_000);
    buildApi.scripts.set(jobId, 'echo "warm job on $(hostname)"');
    const done = w.jobDone(jobId);
    await publishRaw(
      amqp.vhost.uri,
      '',
      QUEUE,
      JSON.stringify({
        type: 'test',
        vm_type: 'default',
        queue: QUEUE,
        uuid: `uuid-${jobId}`,
        config: { language: 'ruby', os: 'linux', group: 'stable', dist: 'bookworm' },
        env_vars: [],
        job: { id: jobId, number: '1.1', commit: 'abc', branch: 'main', pull_request: false, queued_at: '2026-12-04T00:00:00Z' },
        source: { id: 1, number: '1', event_type: 'push' },
        repository: { id: 2, slug: 'octo/warm' },
        ssh_key: null,
        timeouts: { hard_limit: 600, log_silence: null },
      }),
    );
    expect((await done).result).toEqual({ outcome: 'finished', state: 'passed' });
    const parts = await drain(amqp.vhost.uri, 'reporting.jobs.logs', await messageCount(amqp.vhost.uri, 'reporting.jobs.logs'), AbortSignal.timeout(10_000));
    const log = parts.map((part) => (part.body as { log: string }).log).join('');
    expect(log).toContain(`Using warm instance ${warm}`);
    expect(log).toContain('warm job on');
    expect(w.worker.status().warmPool).toMatchObject({ hits: 1, misses: 0 });

    // The refill may be idle or still booting: draining destroys it either way.
    w.worker.drain('test');
    await w.worker.stopped;
    expect(await containersOf(engine, workerName)).toEqual([]);
  });
});

describe('the warm pool on gce (fake GCE, real SDK)', () => {
  const host = 'warm-gce-worker';
  let fake: FakeGce;
  let pool: WarmPool | undefined;
  const breaker = new CircuitBreaker({ threshold: 5, backoffMs: HOUR, maxBackoffMs: HOUR, logger: silentLogger });

  beforeEach(async () => {
    fake = await FakeGce.start({ images: travisImages() });
  });
  afterEach(async () => {
    await pool?.close();
    pool = undefined;
    expect(fake.liveInstances()).toEqual([]);
    await fake.close();
  });
  afterAll(() => breaker.dispose());

  it('boots a VM with the labels and a lease for its idle life and a job, hands it to a job of its machine and not to one of another size', async () => {
    const backend = new HeldInstances().wrap(gce.create(gceSettings(fake), testBackendContext({ hostname: host })));
    const { shape } = backend;
    if (shape === undefined) throw new Error('the gce backend tells no shapes');
    const made = new WarmPool({
      backend: { ...backend, shape },
      size: 1,
      mode: 'fixed',
      maxAgeMs: HOUR,
      windowMs: HOUR,
      hardTimeoutMs: 10 * 60_000,
      bootTimeoutMs: 30_000,
      defaults: testAttributes({ jobId: WARM_JOB_ID }),
      breaker,
      logger: silentLogger,
      metrics: recordingMetrics(),
      recordPhase: () => {},
    });
    pool = made;
    const before = Date.now();
    const ready = poolEvent(made, 'ready');
    await made.fill();
    const [warm, warmShape] = await ready;
    expect(warmShape).toMatch(/^image=travis-ci-sugilite-trusty-\S+ machine=n1-standard-2 gpu=none disk=\d+ zone=\* vm_size=-$/);
    const [record] = fake.record;
    expect(record?.labels).toMatchObject({ [GCE_LABELS.jobId]: String(WARM_JOB_ID), [GCE_LABELS.worker]: host });
    expect(record?.labels[GCE_LABELS.repository]).toMatch(/^mayfly-warm-pool-[0-9a-f]{8}$/);
    // Its idle life (1 h) and a job's hard timeout (10 min), plus the backend's margin: never less.
    expect(Number(record?.labels[GCE_LABELS.leaseExpiry])).toBeGreaterThanOrEqual(Math.floor((before + HOUR + 10 * 60_000) / 1000));

    const large = await made.start(testAttributes({ jobId: 7, vmSize: 'large' }), jobOptions());
    const same = await made.start(testAttributes({ jobId: 8 }), jobOptions());
    try {
      expect(large.id).not.toBe(warm);
      expect(same.id).toBe(warm);
      expect(await runOn(same, 'echo warm-gce')).toContain('warm-gce');
    } finally {
      await Promise.all([large.destroy(), same.destroy()]);
    }
  }, 60_000);
});
