/**
 * Job start on a cloud backend: publish → `started` of jobs on the fake GCE
 * and the fake EC2 (test/fakes/), driven through the real SDKs by a worker
 * child, with a realistic boot (BOOT_MS until the VM runs, SSHD_DELAY_MS
 * more until its sshd listens, refusing until then) and a build API that
 * takes BUILD_API_MS to answer. A batch of jobs is published
 * PUBLISH_SPACING_MS apart to a worker with a processor each; every variant
 * runs on both fakes in the same run:
 *
 * - today's path: the script is fetched first and the instance started
 *   after it (`sequentialStart`), as travis does;
 * - cold: the instance boots while the script is fetched, operations are
 *   awaited with the API's wait, SSH is tried again soon after a refusal;
 * - a warm-pool hit: the pool holds a ready VM for every job of the batch.
 *
 * The floor beside each row: the fake's own boot of that batch's VMs (from
 * the create call reaching it until their sshd listened, p50: the nominal
 * boot plus what starting sshd took on this machine) plus one OpenSSH
 * `ssh host true` (a handshake, authentication and a command) against an
 * sshd already listening; for a warm hit, which waits for no boot, the
 * build API's answer plus that command. Targets: cold adds less than 1 s
 * to its floor, a warm hit less than 0.5 s (p50). A job is run first on each worker and not counted (the SDK loads, the
 * image list is read). `jobStartScenario` takes the variants, so another
 * way of starting joins the table the same way.
 */
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { FakeEc2 } from '../../test/fakes/ec2-server.js';
import { ec2Env, registerDefaultImage } from '../../test/fakes/ec2-settings.js';
import { FakeGce } from '../../test/fakes/gce-server.js';
import { gceEnv, travisImages } from '../../test/fakes/gce-settings.js';
import type { SshdTarget } from '../../test/helpers/sshd.js';
import type { BenchChild } from '../child-process.js';
import { failedRow, jobIds, startBenchWorker, targets, type BenchContext, type Scenario } from '../context.js';
import { runOpenSsh } from '../openssh.js';
import { untilWarm, warmStatusEndpoint } from '../warm-status.js';
import type { Row } from '../report.js';
import { fixed, summarize, type Summary } from '../stats.js';

const SCENARIO = 'job-start';
/** A realistic cloud boot (docs/benchmarks.md): 20 s to RUNNING, 5 s more until sshd answers. */
const BOOT_MS = 20_000;
const SSHD_DELAY_MS = 5_000;
/** The build API takes this long per script. */
const BUILD_API_MS = 1_000;
/** `--quick` divides the boot and sshd delays by this (the build API keeps its second). */
const QUICK_SCALE = 10;
/** The target: a cold start adds less than this to the floor (p50). */
const COLD_ADDED_TARGET_MS = 1_000;
/** The target: a warm hit adds less than this to its floor, the script's fetch and an SSH command (p50). */
const HIT_ADDED_TARGET_MS = 500;
/**
 * Jobs of a batch are published this far apart, in ms: a stream of jobs, as
 * a worker sees them, rather than a burst whose VMs would all start sshd and
 * take their handshakes in the same instant on the bench's two cores.
 */
const PUBLISH_SPACING_MS = 500;
/** OpenSSH `ssh host true` runs for the floor (the first, cold, is dropped). */
const SSH_TRUE_RUNS = 10;

export type JobStartBackend = 'gce' | 'ec2';

/** What a variant adds to one worker. */
export interface VariantSetup {
  /** Worker settings beyond the backend's and the scenario's. */
  env: Record<string, string>;
  /** Resolves once the worker is ready for the batch (e.g. its pool is full). */
  ready: (signal: AbortSignal) => Promise<void>;
}

/** One way of starting jobs measured by the scenario: a row per backend. */
export interface JobStartVariant {
  /** Names the row, e.g. `cold, overlap and waits`. */
  name: string;
  /** Made afresh for each worker, for a batch of `jobs`: what the variant adds to it (e.g. a pool). */
  setup?: (jobs: number) => Promise<VariantSetup>;
  /** Fetch each script before starting its instance (today's path). */
  sequentialStart?: boolean;
  /** The floor beside the row: the fake's boot plus an SSH command (`boot`, the default), or the build API's answer plus one (`script`: no boot is waited for). */
  floor?: 'boot' | 'script';
  /** The row's target: a bound on the p50 added to the floor, or on the p50 itself; none when absent. */
  target?: { addedP50Ms: number } | { p50Ms: number };
}

/**
 * A warm-pool hit: the batch is published once the pool holds a ready VM
 * for each of its jobs. The job still waits for its script, so its floor is
 * the build API's answer plus one SSH command, and the target what a hit
 * may add to that (docs/warm-pool.md).
 */
const WARM_HIT: JobStartVariant = {
  name: `warm-pool hit (its ${fixed(BUILD_API_MS / 1000, 0)} s script included)`,
  async setup(jobs) {
    const status = await warmStatusEndpoint();
    return {
      env: { TRAVIS_WORKER_WARM_POOL_SIZE: String(jobs), TRAVIS_WORKER_WARM_POOL_MODE: 'fixed', ...status.env },
      ready: (signal) => untilWarm(status, jobs, signal),
    };
  },
  floor: 'script',
  target: { addedP50Ms: HIT_ADDED_TARGET_MS },
};

/** The variants of the scenario as shipped: today's path beside the cold start with overlap and waits, and a warm hit. */
export const JOB_START_VARIANTS: readonly JobStartVariant[] = [
  { name: "today's path (script, then start)", sequentialStart: true },
  { name: 'cold, overlap and waits', target: { addedP50Ms: COLD_ADDED_TARGET_MS } },
  WARM_HIT,
];

interface Timing {
  bootMs: number;
  spacingMs: number;
  sshdDelayMs: number;
  jobs: number;
  scaled: boolean;
}

/** `p50 27.27 s · p99 27.46 s (n=20)`: these latencies are seconds long. */
function formatSeconds(summary: Summary): string {
  return `p50 ${fixed(summary.p50 / 1000, 2)} s · p99 ${fixed(summary.p99 / 1000, 2)} s (n=${summary.n})`;
}

/** A build API that answers every script request after `delayMs`. */
async function slowBuildApi(delayMs: number): Promise<{ uri: string; server: Server }> {
  const server = createServer((request, response) => {
    request.resume();
    const timer = setTimeout(() => response.end('echo started'), delayMs);
    response.on('close', () => clearTimeout(timer));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { uri: `http://token@127.0.0.1:${(server.address() as AddressInfo).port}/script`, server };
}

/** Settings as travis' defaults have them where they shape a boot: the sleeps that apply are the real ones. */
function backendEnv(backend: JobStartBackend, fakes: { gce: FakeGce; ec2: FakeEc2 }): Record<string, string> {
  if (backend === 'gce') {
    return gceEnv(fakes.gce, {
      TRAVIS_WORKER_GCE_BOOT_PRE_POLL_SLEEP: '15s',
      TRAVIS_WORKER_GCE_BOOT_POLL_SLEEP: '3s',
      TRAVIS_WORKER_GCE_STOP_PRE_POLL_SLEEP: '15s',
      TRAVIS_WORKER_GCE_STOP_POLL_SLEEP: '3s',
      TRAVIS_WORKER_GCE_UPLOAD_RETRY_SLEEP: '1s',
    });
  }
  return {
    TRAVIS_WORKER_PROVIDER_NAME: 'ec2',
    ...ec2Env(fakes.ec2, {
      TRAVIS_WORKER_EC2_BOOT_POLL_SLEEP: '2s',
      TRAVIS_WORKER_EC2_UPLOAD_RETRIES: '120',
      TRAVIS_WORKER_EC2_UPLOAD_RETRY_SLEEP: '1s',
      TRAVIS_WORKER_EC2_SSH_DIAL_TIMEOUT: '5s',
      TRAVIS_WORKER_EC2_INTERRUPTION_POLL_SLEEP: '15s',
    }),
  };
}

/** Publish `count` jobs, `spacingMs` apart; publish → `started` of each, once every one has been settled by the worker. */
async function startBatch(context: BenchContext, worker: BenchChild, queue: string, count: number, spacingMs: number): Promise<number[]> {
  const ids = jobIds(count);
  const pending = new Set(ids);
  const settled = new Promise<void>((resolve) => {
    const stop = worker.onJobDone((done) => {
      pending.delete(done.jobId);
      if (pending.size > 0) return;
      stop();
      resolve();
    });
  });
  const published = new Map<number, number>();
  for (const [index, id] of ids.entries()) {
    if (index > 0) await sleep(spacingMs, undefined, { signal: context.signal });
    published.set(id, context.broker.publishJob(queue, id, ['true']));
  }
  const startedMs: number[] = [];
  for (const id of ids) {
    const times = await context.broker.terminal(id, context.signal);
    if (times.terminalState !== 'passed') throw new Error(`job ${id} ended ${times.terminalState}, not passed`);
    startedMs.push(((times.startedUs ?? Number.NaN) - (published.get(id) ?? Number.NaN)) / 1000);
  }
  await settled;
  return startedMs;
}

/** How long the fake took from each create call after `since` until that VM's sshd listened, in ms. */
function fakeBoots(backend: JobStartBackend, fakes: { gce: FakeGce; ec2: FakeEc2 }, since: number): number[] {
  const boots =
    backend === 'gce'
      ? fakes.gce.record.map((record) => ({ created: record.createdAt, listening: record.sshdListeningAt }))
      : fakes.ec2.instances.map((instance) => ({ created: instance.launchTime.getTime(), listening: instance.sshdListeningAt }));
  return boots.flatMap(({ created, listening }) => (created >= since && listening !== undefined ? [listening - created] : []));
}

function variantRow(variant: JobStartVariant, backend: JobStartBackend, started: Summary, boot: Summary, ssh: Summary, timing: Timing): Row {
  const scriptFloor = variant.floor === 'script';
  const floorMs = (scriptFloor ? BUILD_API_MS : boot.p50) + ssh.p50;
  const floorStart = scriptFloor
    ? `build API ${fixed(BUILD_API_MS / 1000, 1)} s`
    : `fake boot to sshd p50 ${fixed(boot.p50 / 1000, 2)} s (${fixed(timing.bootMs / 1000, 1)} s + ${fixed(timing.sshdDelayMs / 1000, 1)} s set)`;
  const floorText = `${floorStart} + OpenSSH \`ssh host true\` p50 ${fixed(ssh.p50, 0)} ms = ${fixed(floorMs / 1000, 2)} s`;
  const added = started.p50 - floorMs;
  let target = '—';
  let met: Row['met'] = 'n/a';
  if (variant.target && 'addedP50Ms' in variant.target) {
    target = `added p50 < ${fixed(variant.target.addedP50Ms / 1000, 1)} s`;
    met = Number.isFinite(added) ? (added < variant.target.addedP50Ms ? 'yes' : 'no') : 'n/a';
  } else if (variant.target) {
    target = `p50 < ${fixed(variant.target.p50Ms / 1000, 1)} s`;
    met = Number.isFinite(started.p50) ? (started.p50 < variant.target.p50Ms ? 'yes' : 'no') : 'n/a';
  }
  const scale = timing.scaled ? `; boot scaled 1/${QUICK_SCALE}` : '';
  return {
    scenario: SCENARIO,
    metric: `${backend}: publish → started, ${variant.name} (${timing.jobs} jobs ${fixed(timing.spacingMs / 1000, 2)} s apart${scale})`,
    worker: formatSeconds(started),
    baseline: floorText,
    target,
    met,
    note: `${added >= 0 ? '+' : '−'}${fixed(Math.abs(added) / 1000, 2)} s over the floor`,
    data: { started, boot, sshTrue: ssh, floorMs, addedP50Ms: added, bootMs: timing.bootMs, sshdDelayMs: timing.sshdDelayMs, buildApiMs: BUILD_API_MS },
  };
}

/** The floor's SSH part: `ssh host true` against an sshd already listening. */
async function sshTrue(context: BenchContext): Promise<Summary> {
  const started = await targets(context, 1);
  try {
    const target = started.list[0] as SshdTarget;
    const runs: number[] = [];
    for (let i = 0; i <= SSH_TRUE_RUNS; i++) {
      const run = await runOpenSsh(target, context.key.path, 'true', { signal: context.signal });
      if (i > 0) runs.push(run.elapsedMs);
    }
    return summarize(runs);
  } finally {
    await started.release();
  }
}

/** The job-start scenario over `variants` (each measured on the fake GCE and the fake EC2). */
export function jobStartScenario(variants: readonly JobStartVariant[]): Scenario {
  return {
    name: SCENARIO,
    description: 'publish → started on the fake GCE and EC2 with a 20 s + 5 s boot and a 1 s build API: today\'s path, overlap and waits, a warm-pool hit (p50, p99)',
    async run(context) {
      const timing: Timing = context.quick
        ? { bootMs: BOOT_MS / QUICK_SCALE, sshdDelayMs: SSHD_DELAY_MS / QUICK_SCALE, spacingMs: PUBLISH_SPACING_MS / QUICK_SCALE, jobs: 5, scaled: true }
        : { bootMs: BOOT_MS, sshdDelayMs: SSHD_DELAY_MS, spacingMs: PUBLISH_SPACING_MS, jobs: 20, scaled: false };
      context.progress(`job-start: ${SSH_TRUE_RUNS} × OpenSSH ssh host true`);
      const ssh = await sshTrue(context);

      const buildApi = await slowBuildApi(BUILD_API_MS);
      const gce = await FakeGce.start({ images: travisImages(), bootMs: timing.bootMs, sshdDelayMs: timing.sshdDelayMs });
      const ec2 = await FakeEc2.start({ bootDelayMs: timing.bootMs, sshdDelayMs: timing.sshdDelayMs });
      registerDefaultImage(ec2);
      const release = context.resources.add('job-start fakes and build API', async () => {
        buildApi.server.closeAllConnections();
        buildApi.server.close();
        await Promise.all([gce.close(), ec2.close()]);
      });
      const rows: Row[] = [];
      try {
        for (const backend of ['gce', 'ec2'] as const) {
          for (const variant of variants) {
            context.signal.throwIfAborted();
            const label = `${backend} ${variant.name}`;
            try {
              const queue = `builds.bench-job-start-${backend}`;
              await context.broker.declareJobQueue(queue);
              const setup = await variant.setup?.(timing.jobs);
              const worker = await startBenchWorker(
                context,
                `job-start ${label}`,
                {
                  ...backendEnv(backend, { gce, ec2 }),
                  TRAVIS_WORKER_QUEUE_NAME: queue,
                  TRAVIS_WORKER_POOL_SIZE: String(timing.jobs),
                  TRAVIS_WORKER_BUILD_API_URI: buildApi.uri,
                  ...setup?.env,
                },
                variant.sequentialStart === true,
              );
              try {
                context.progress(`job-start: a first job (not counted) on ${label}`);
                await startBatch(context, worker, queue, 1, 0);
                await setup?.ready(context.signal);
                context.progress(`job-start: ${timing.jobs} jobs on ${label}`);
                const since = Date.now();
                const started = summarize(await startBatch(context, worker, queue, timing.jobs, timing.spacingMs));
                rows.push(variantRow(variant, backend, started, summarize(fakeBoots(backend, { gce, ec2 }, since)), ssh, timing));
              } finally {
                await worker.release();
              }
            } catch (err) {
              context.signal.throwIfAborted();
              rows.push(failedRow(SCENARIO, label, err));
            }
          }
        }
      } finally {
        await release();
      }
      return rows;
    },
  };
}

export const jobStart = jobStartScenario(JOB_START_VARIANTS);
