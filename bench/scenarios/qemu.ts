/**
 * The qemu backend's boot: real VMs of the test guest (scripts/
 * qemu-test-guest.sh: Debian's cloud kernel booted directly, a shell init,
 * OpenSSH), one at a time.
 *
 * - start → SSH ready: the backend's `start` called by the bench (overlay,
 *   seed, QEMU launched, until the job's key logs in), with its phases;
 * - publish → `started`: whole jobs through a worker on the broker, which
 *   adds the boot to everything the overhead scenario measures;
 * - the same with a warm pool of one, each job published once the pool
 *   holds a ready VM: a hit, no boot waited for.
 *
 * Accelerator: `MAYFLY_BENCH_QEMU_ACCEL` (default `tcg`, what CI has; `kvm`
 * on a host with working KVM). Beside the figures, peers' published ones:
 * no machine here runs them.
 */
import { rm } from 'node:fs/promises';
import { QemuBackend } from '../../backends/qemu/backend.js';
import type { BootPhase } from '../../src/backend/contract.js';
import { silentLogger } from '../../src/logger.js';
import { testAttributes } from '../../test/helpers/attributes.js';
import { testBackendContext } from '../../test/helpers/backend-context.js';
import { qemuUnavailable, testQemuEnv, testQemuSettings, testWorkDir } from '../../test/helpers/qemu.js';
import { failedRow, jobIds, startBenchWorker, type BenchContext, type Scenario } from '../context.js';
import type { Row } from '../report.js';
import { untilWarm, warmStatusEndpoint } from '../warm-status.js';
import { fixed, summarize, type Summary } from '../stats.js';

const SCENARIO = 'qemu';
/** Published figures of other VM runners, for scale (their own hosts, their own guests). */
const PEERS = 'Tart (macOS VMs): seconds to boot; Firecracker: ~125 ms to guest init';

const seconds = (summary: Summary): string => `p50 ${fixed(summary.p50 / 1000, 2)} s · max ${fixed(summary.max / 1000, 2)} s (n=${summary.n})`;

function row(metric: string, summary: Summary, note: string): Row {
  return { scenario: SCENARIO, metric, worker: seconds(summary), baseline: PEERS, target: '—', met: 'n/a', note, data: { ...summary } };
}

async function bootRows(context: BenchContext, accel: string, count: number): Promise<Row[]> {
  const workDir = await testWorkDir();
  const backend = new QemuBackend(testQemuSettings(workDir, { accel }), testBackendContext(), false);
  const totals: number[] = [];
  const phases: Record<string, number[]> = {};
  try {
    for (let i = 0; i < count; i++) {
      context.progress(`qemu: boot ${i + 1} of ${count} to SSH ready (${accel})`);
      const recordPhase = (phase: BootPhase, ms: number): void => {
        (phases[phase] ??= []).push(ms);
      };
      const instance = await backend.start(testAttributes({ jobId: i + 1 }), { signal: context.signal, progress: () => {}, logger: silentLogger, recordPhase });
      totals.push(instance.startupMs);
      await instance.destroy();
    }
  } finally {
    await backend.close();
    await rm(workDir, { recursive: true, force: true });
  }
  const p50 = (phase: BootPhase): string => `${fixed(summarize(phases[phase] ?? []).p50, 0)} ms`;
  return [row(`${accel}: start → SSH ready`, summarize(totals), `overlay+seed ${p50('create')}, QEMU up ${p50('running')}, kernel to SSH ${p50('ssh-ready')}`)];
}

/** Whole jobs through a worker, one at a time: each a cold boot, or with `warm` a warm-pool hit (published once the pool holds a ready VM). */
async function jobRows(context: BenchContext, accel: string, count: number, warm: boolean): Promise<Row[]> {
  const workDir = await testWorkDir();
  const queue = 'builds.bench-qemu';
  await context.broker.declareJobQueue(queue);
  const status = warm ? await warmStatusEndpoint() : undefined;
  const pool = status ? { TRAVIS_WORKER_WARM_POOL_SIZE: '1', TRAVIS_WORKER_WARM_POOL_MODE: 'fixed', ...status.env } : {};
  const worker = await startBenchWorker(context, warm ? 'qemu-warm' : 'qemu', {
    ...testQemuEnv(workDir, { TRAVIS_WORKER_QEMU_ACCEL: accel }),
    TRAVIS_WORKER_QUEUE_NAME: queue,
    TRAVIS_WORKER_POOL_SIZE: '1',
    ...pool,
  });
  const started: number[] = [];
  try {
    for (const id of jobIds(count)) {
      if (status) await untilWarm(status, 1, context.signal);
      context.progress(`qemu: job ${id} through the worker (${accel}${warm ? ', warm hit' : ''})`);
      const publishedUs = context.broker.publishJob(queue, id, ['true']);
      const times = await context.broker.terminal(id, context.signal);
      if (times.terminalState !== 'passed') throw new Error(`job ${id} ended ${times.terminalState}, not passed`);
      started.push(((times.startedUs ?? Number.NaN) - publishedUs) / 1000);
    }
  } finally {
    await worker.release();
    await rm(workDir, { recursive: true, force: true });
  }
  return warm
    ? [row(`${accel}: publish → started, warm-pool hit`, summarize(started), 'a VM booted ahead: the job pipeline and one SSH command, no boot')]
    : [row(`${accel}: publish → started`, summarize(started), 'the boot plus the job pipeline (broker hops, script upload)')];
}

export const qemu: Scenario = {
  name: SCENARIO,
  description: 'qemu VMs of the test guest: start → SSH ready, and publish → started through a worker, cold and as a warm-pool hit (TCG unless MAYFLY_BENCH_QEMU_ACCEL=kvm)',
  async run(context) {
    const unavailable = qemuUnavailable();
    if (unavailable !== undefined) return [failedRow(SCENARIO, 'boot', new Error(`${unavailable} (scripts/test-prerequisites.sh builds the guest)`))];
    const accel = process.env.MAYFLY_BENCH_QEMU_ACCEL ?? 'tcg';
    const counts = context.quick ? { boots: 2, jobs: 2 } : { boots: 5, jobs: 3 };
    const rows: Row[] = [];
    try {
      rows.push(...(await bootRows(context, accel, counts.boots)));
    } catch (err) {
      context.signal.throwIfAborted();
      rows.push(failedRow(SCENARIO, 'start → SSH ready', err));
    }
    for (const warm of [false, true]) {
      try {
        rows.push(...(await jobRows(context, accel, counts.jobs, warm)));
      } catch (err) {
        context.signal.throwIfAborted();
        rows.push(failedRow(SCENARIO, warm ? 'publish → started, warm-pool hit' : 'publish → started', err));
      }
    }
    return rows;
  },
};
