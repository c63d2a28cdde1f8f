/**
 * The warm pool (docs/warm-pool.md), in two parts:
 *
 * - **warm hit on fake GCE**: a worker on the fake GCE server (the real SDK,
 *   a real sshd per VM) whose VMs take `BOOT_MS` to reach RUNNING, a tenth
 *   of a realistic 20 s (the fake's sshd answers as soon as the VM runs,
 *   where a real one takes about 5 s more). Jobs one at a time, each
 *   published once the pool holds a ready VM: publish -> `started`, against
 *   the same jobs on the same worker settings without a pool (a cold boot
 *   each). Baseline: the fake's boot and one OpenSSH `ssh host true`.
 * - **adaptive against fixed**: the same mixed stream of jobs of three
 *   shapes (`vm_size`), in three phases with a quiet spell, through an
 *   adaptive and a fixed pool of the same size at once, each on its own
 *   `fake` backend (a boot takes `SIM_BOOT_MS`), each made from the
 *   settings as the worker makes it. Time is scaled: one second here
 *   stands for a minute. Reported: each pool's hit rate and the idle
 *   instance-seconds it cost (every second a machine sat ready, until it
 *   served a job or was destroyed).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { CircuitBreaker } from '../../src/backend/breaker.js';
import { definition as fakeBackend, type FakeSettings } from '../../backends/fake/index.js';
import { loadConfig } from '../../src/config/load.js';
import { silentLogger } from '../../src/logger.js';
import { noopMetrics } from '../../src/telemetry/metrics.js';
import type { WarmPoolMode } from '../../src/warm-pool/demand.js';
import { createWarmPool } from '../../src/warm-pool/create.js';
import { FakeGce } from '../../test/fakes/gce-server.js';
import { gceEnv, travisImages } from '../../test/fakes/gce-settings.js';
import { testAttributes } from '../../test/helpers/attributes.js';
import type { SshdTarget } from '../../test/helpers/sshd.js';
import type { BenchChild } from '../child-process.js';
import { failedRow, jobIds, startBenchWorker, targets, type BenchContext, type Scenario } from '../context.js';
import { runOpenSsh } from '../openssh.js';
import { untilWarm, warmStatusEndpoint } from '../warm-status.js';
import type { Row } from '../report.js';
import { fixed, formatLatency, summarize, type Summary } from '../stats.js';

const SCENARIO = 'warm-pool';
/** The fake GCE's boot to RUNNING: 20 s scaled down ten times. */
const BOOT_MS = 2_000;
/** The target (issue): a warm hit starts its job in under half a second (p50). */
const HIT_P50_TARGET_MS = 500;

/** The simulated backend's boot: 25 s scaled (1 s stands for a minute). */
const SIM_BOOT_MS = 400;
/** How long a simulated job holds its machine. */
const SIM_JOB_MS = 300;
const SIM_SIZE = 4;
/** The adaptive window: 4 s stands for 4 minutes. */
const SIM_WINDOW_MS = 4_000;

interface Counts {
  hits: number;
  cold: number;
  ssh: number;
}

/** Run `ids` one at a time on `worker`, before each waiting for `before`; publish -> `started` of each, in ms. */
async function timeToStarted(context: BenchContext, worker: BenchChild, queue: string, ids: number[], before: () => Promise<void>): Promise<number[]> {
  const samples: number[] = [];
  for (const id of ids) {
    await before();
    const settled = new Promise<void>((resolve) => {
      const stop = worker.onJobDone((done) => {
        if (done.jobId !== id) return;
        stop();
        resolve();
      });
    });
    const publishedUs = context.broker.publishJob(queue, id, ['true']);
    const times = await context.broker.terminal(id, context.signal);
    await settled;
    if (times.terminalState !== 'passed') throw new Error(`job ${id} ended ${times.terminalState}, not passed`);
    samples.push(((times.startedUs ?? Number.NaN) - publishedUs) / 1000);
  }
  return samples;
}

async function gceRows(context: BenchContext, counts: Counts): Promise<Row[]> {
  const fake = await FakeGce.start({ images: travisImages(), bootMs: BOOT_MS });
  const releaseFake = context.resources.add('fake GCE', () => fake.close());
  const sshd = await targets(context, 1);
  try {
    context.progress(`warm-pool: ${counts.ssh} × OpenSSH ssh host true`);
    const handshakes: number[] = [];
    for (let i = 0; i < counts.ssh + 1; i++) {
      const run = await runOpenSsh(sshd.list[0] as SshdTarget, context.key.path, 'true', { signal: context.signal });
      if (i > 0) handshakes.push(run.elapsedMs);
    }
    const ssh = summarize(handshakes);
    const baseline = `boot ${fixed(BOOT_MS / 1000, 1)} s (20 s ÷ 10) + ssh true p50 ${fixed(ssh.p50, 1)} ms`;

    const queue = 'builds.bench-warm-gce';
    await context.broker.declareJobQueue(queue);
    const env = { ...gceEnv(fake), TRAVIS_WORKER_QUEUE_NAME: queue, TRAVIS_WORKER_POOL_SIZE: '1' };

    context.progress(`warm-pool: ${counts.cold} cold starts on fake GCE (pool off)`);
    const coldWorker = await startBenchWorker(context, 'warm-pool-off', env);
    let cold: Summary;
    try {
      cold = summarize(await timeToStarted(context, coldWorker, queue, jobIds(counts.cold), async () => {}));
    } finally {
      await coldWorker.release();
    }

    context.progress(`warm-pool: ${counts.hits} warm hits on fake GCE`);
    const status = await warmStatusEndpoint();
    const warmWorker = await startBenchWorker(context, 'warm-pool-on', {
      ...env,
      TRAVIS_WORKER_WARM_POOL_SIZE: '1',
      TRAVIS_WORKER_WARM_POOL_MODE: 'fixed',
      ...status.env,
    });
    let hits: Summary;
    try {
      hits = summarize(await timeToStarted(context, warmWorker, queue, jobIds(counts.hits), () => untilWarm(status, 1, context.signal)));
    } finally {
      await warmWorker.release();
    }
    return [
      {
        scenario: SCENARIO,
        metric: 'gce (fake): publish → started, cold boot (pool off)',
        worker: formatLatency(cold),
        baseline,
        target: '—',
        met: 'n/a',
        data: { cold, bootMs: BOOT_MS, sshTrue: ssh },
      },
      {
        scenario: SCENARIO,
        metric: 'gce (fake): publish → started, warm hit',
        worker: formatLatency(hits),
        baseline,
        target: `p50 < ${HIT_P50_TARGET_MS} ms`,
        met: Number.isFinite(hits.p50) ? (hits.p50 < HIT_P50_TARGET_MS ? 'yes' : 'no') : 'n/a',
        note: `${fixed(cold.p50 / hits.p50, 0)}× faster than cold`,
        data: { hits, bootMs: BOOT_MS, sshTrue: ssh },
      },
    ];
  } finally {
    await sshd.release();
    await releaseFake();
  }
}

/** Jobs that ask for no `vm_size`: the shape a fixed pool warms before the first job. */
const DEFAULT_SIZE = 'default';

/** One job of the stream: when (ms from the start) and which shape. */
interface Arrival {
  atMs: number;
  size: string;
}

/** Every `everyMs` from `fromMs` until `toMs`, a job of `size`. */
function steady(size: string, fromMs: number, toMs: number, everyMs: number): Arrival[] {
  const arrivals: Arrival[] = [];
  for (let at = fromMs; at < toMs; at += everyMs) arrivals.push({ atMs: at, size });
  return arrivals;
}

/**
 * Three shapes in three phases (minutes, scaled to seconds): busy with
 * default-sized jobs and some `large`, then mostly `gpu-medium`, a quiet
 * spell, then a burst of `large`.
 */
function mixedStream(scale: number): Arrival[] {
  const s = (seconds: number): number => seconds * 1000 * scale;
  return [
    ...steady(DEFAULT_SIZE, 0, s(8), s(0.5)),
    ...steady('large', s(0.25), s(8), s(2)),
    ...steady('gpu-medium', s(8), s(16), s(0.5)),
    ...steady(DEFAULT_SIZE, s(8.25), s(16), s(2)),
    ...steady('large', s(26), s(30), s(0.5)),
  ].sort((a, b) => a.atMs - b.atMs);
}

interface PoolRun {
  hits: number;
  misses: number;
  idleSeconds: number;
  durationSeconds: number;
}

/** The stream through a pool of `mode`, made as the worker makes it (settings, `createWarmPool`), in real (scaled) time. */
async function runStream(mode: WarmPoolMode, stream: Arrival[], signal: AbortSignal): Promise<PoolRun> {
  let idleMs = 0;
  let hits = 0;
  let misses = 0;
  const config = loadConfig([fakeBackend], {
    TRAVIS_WORKER_PROVIDER_NAME: 'fake',
    TRAVIS_WORKER_FAKE_STARTUP_DURATION: `${SIM_BOOT_MS}ms`,
    TRAVIS_WORKER_WARM_POOL_SIZE: String(SIM_SIZE),
    TRAVIS_WORKER_WARM_POOL_MODE: mode,
    TRAVIS_WORKER_WARM_POOL_WINDOW: `${SIM_WINDOW_MS}ms`,
  });
  const breaker = new CircuitBreaker({ ...config.breaker, logger: silentLogger });
  const backend = fakeBackend.create(config.backendSettings as unknown as FakeSettings, {
    logger: silentLogger,
    hostname: 'bench',
    metrics: { apiCall: () => {} },
  });
  const pool = createWarmPool({
    config,
    backend,
    breaker,
    logger: silentLogger,
    metrics: {
      ...noopMetrics,
      warmPool: {
        hit: () => (hits += 1),
        miss: () => (misses += 1),
        left: (_how, ms) => (idleMs += ms),
        bootFailed: () => {},
      },
    },
  });
  if (pool === undefined) throw new Error('no warm pool was made');
  const began = performance.now();
  try {
    await pool.fill();
    const jobs: Promise<void>[] = [];
    for (const [index, arrival] of stream.entries()) {
      const wait = arrival.atMs - (performance.now() - began);
      if (wait > 0) await sleep(wait, undefined, { signal });
      jobs.push(
        (async () => {
          const size = arrival.size === DEFAULT_SIZE ? {} : { vmSize: arrival.size };
          const instance = await pool.start(testAttributes({ jobId: index + 1, ...size }), {
            signal,
            progress: () => {},
            logger: silentLogger,
            recordPhase: () => {},
          });
          await sleep(SIM_JOB_MS, undefined, { signal });
          await instance.destroy();
        })(),
      );
    }
    await Promise.all(jobs);
  } finally {
    // Draining counts the idle time of what is still in the pool.
    await pool.close();
    breaker.dispose();
  }
  return { hits, misses, idleSeconds: idleMs / 1000, durationSeconds: (performance.now() - began) / 1000 };
}

/** `+3`, `−2`, `+0`: a difference, signed. */
const signed = (value: number): string => `${value < 0 ? '−' : '+'}${fixed(Math.abs(value), 0)}`;

async function mixRows(context: BenchContext): Promise<Row[]> {
  const stream = mixedStream(context.quick ? 0.5 : 1);
  context.progress(`warm-pool: ${stream.length} jobs of three shapes through an adaptive and a fixed pool of ${SIM_SIZE} (fake backend)`);
  const [adaptive, fixedPool] = await Promise.all([runStream('adaptive', stream, context.signal), runStream('fixed', stream, context.signal)]);
  const rate = (run: PoolRun): number => run.hits / Math.max(1, run.hits + run.misses);
  const describe = (run: PoolRun): string =>
    `hit rate ${fixed(100 * rate(run), 0)}% · ${fixed(run.idleSeconds, 1)} idle instance-s over ${fixed(run.durationSeconds, 0)} s`;
  return [
    {
      scenario: SCENARIO,
      metric: `mixed stream, 3 shapes (1 s = 1 min): adaptive pool of ${SIM_SIZE}`,
      worker: describe(adaptive),
      baseline: `fixed pool of ${SIM_SIZE}: ${describe(fixedPool)}`,
      target: 'fewer idle instance-s than fixed',
      met: adaptive.idleSeconds < fixedPool.idleSeconds ? 'yes' : 'no',
      note: `${fixed(100 * (1 - adaptive.idleSeconds / fixedPool.idleSeconds), 0)}% less idle; hit rate ${signed(100 * (rate(adaptive) - rate(fixedPool)))} points`,
      data: { adaptive, fixed: fixedPool, jobs: stream.length, size: SIM_SIZE, bootMs: SIM_BOOT_MS, windowMs: SIM_WINDOW_MS },
    },
  ];
}

export const warmPool: Scenario = {
  name: SCENARIO,
  description: 'warm pool: a warm hit publish → started on fake GCE; adaptive vs fixed pool hit rate and idle cost on a mixed stream',
  async run(context) {
    const counts: Counts = context.quick ? { hits: 3, cold: 2, ssh: 3 } : { hits: 20, cold: 5, ssh: 20 };
    const rows: Row[] = [];
    try {
      rows.push(...(await gceRows(context, counts)));
    } catch (err) {
      if (context.signal.aborted) throw err;
      rows.push(failedRow(SCENARIO, 'gce (fake): publish → started', err));
    }
    try {
      rows.push(...(await mixRows(context)));
    } catch (err) {
      if (context.signal.aborted) throw err;
      rows.push(failedRow(SCENARIO, 'mixed stream', err));
    }
    return rows;
  },
};
