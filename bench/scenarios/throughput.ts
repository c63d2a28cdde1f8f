/**
 * Scenario 2, throughput: N trivial jobs put in the queue first, then one
 * worker process on `fake` takes them at pool sizes 1, 30 and 200. The rate
 * is (N - 1) / (last job settled - first job settled), as the worker's
 * job-done events tell it, so the worker's startup (a channel per
 * processor) stays out. Beside it, the broker's raw publish/consume rate
 * on the same vhost, and what that means in jobs: a job is one delivery
 * plus the state updates and log parts it publishes (counted).
 */
import { rawPublishConsumeRate, type RawRate } from '../amqp-baselines.js';
import { jobIds, startBenchWorker, type BenchContext, type Scenario } from '../context.js';
import type { Row } from '../report.js';
import { fixed } from '../stats.js';
import { failedRow } from '../context.js';

const SCENARIO = 'throughput';
const POOL_SIZES = [1, 30, 200] as const;
/** The target at pool 200 (docs/benchmarks.md). */
const TARGET_JOBS_PER_SECOND = 500;
const TARGET_POOL = 200;

interface PoolRun {
  pool: number;
  jobs: number;
  settled: number;
  seconds: number;
  jobsPerSecond: number;
  /** Broker messages per job: its delivery plus the state updates and log parts received. */
  messagesPerJob: number;
  notPassed: number;
  timedOut: boolean;
}

async function runPool(context: BenchContext, pool: number, count: number, deadlineMs: number): Promise<PoolRun> {
  const queue = `builds.bench-throughput-${pool}`;
  const { broker } = context;
  await broker.declareJobQueue(queue);
  await broker.purge(queue);
  const ids = jobIds(count);
  context.progress(`throughput: queueing ${count} jobs for pool ${pool}`);
  for (const id of ids) broker.publishJob(queue, id, ['true']);
  await broker.confirmed();
  const before = broker.counts;

  const worker = await startBenchWorker(context, `throughput-${pool}`, {
    TRAVIS_WORKER_PROVIDER_NAME: 'fake',
    TRAVIS_WORKER_QUEUE_NAME: queue,
    TRAVIS_WORKER_POOL_SIZE: String(pool),
  });
  const wanted = new Set(ids);
  let settled = 0;
  let notPassed = 0;
  let firstUs = Number.NaN;
  let lastUs = Number.NaN;
  let timedOut = false;
  try {
    context.progress(`throughput: pool ${pool} running`);
    await new Promise<void>((resolve, reject) => {
      const deadline = setTimeout(() => {
        timedOut = true;
        finish();
      }, deadlineMs);
      const onAbort = (): void => {
        finish();
        reject(context.signal.reason);
      };
      const stopListening = worker.onJobDone((done) => {
        if (!wanted.delete(done.jobId)) return;
        settled++;
        if (done.state !== 'passed') notPassed++;
        if (settled === 1) firstUs = done.atUs;
        lastUs = done.atUs;
        if (wanted.size === 0) finish();
      });
      function finish(): void {
        clearTimeout(deadline);
        stopListening();
        context.signal.removeEventListener('abort', onAbort);
        resolve();
      }
      context.signal.addEventListener('abort', onAbort, { once: true });
    });
    // Every settled job's terminal state has been confirmed, so it is on its way here; wait for the stragglers.
    await broker.until(() => broker.counts.terminal - before.terminal >= settled, AbortSignal.any([context.signal, AbortSignal.timeout(10_000)])).catch(() => undefined);
  } finally {
    await worker.release();
    await broker.purge(queue);
  }
  const after = broker.counts;
  const seconds = (lastUs - firstUs) / 1e6;
  return {
    pool,
    jobs: count,
    settled,
    seconds,
    jobsPerSecond: settled > 1 ? (settled - 1) / seconds : Number.NaN,
    messagesPerJob: settled > 0 ? 1 + (after.states - before.states + after.logs - before.logs) / settled : Number.NaN,
    notPassed,
    timedOut,
  };
}

function baselineText(raw: RawRate, messagesPerJob: number): string {
  const jobs = raw.perSecond / messagesPerJob;
  return `broker raw ${fixed(raw.perSecond, 0)} msg/s (publish+consume, persistent, confirmed) ≈ ${fixed(jobs, 0)} jobs/s at ${fixed(messagesPerJob, 1)} msg/job`;
}

export const throughput: Scenario = {
  name: SCENARIO,
  description: 'jobs/s through one worker on fake at pool 1, 30, 200, beside the broker’s raw publish/consume rate',
  async run(context) {
    const jobs = context.quick ? 300 : 5000;
    const deadlineMs = context.quick ? 15_000 : 60_000;
    const rawMessages = context.quick ? 5_000 : 20_000;
    context.progress(`throughput: broker raw rate (${rawMessages} messages)`);
    const raw = await rawPublishConsumeRate(context, rawMessages);
    const rows: Row[] = [];
    for (const pool of POOL_SIZES) {
      try {
        const run = await runPool(context, pool, jobs, deadlineMs);
        const hasTarget = pool === TARGET_POOL;
        const problems = [
          run.timedOut ? `stopped at the ${deadlineMs / 1000} s limit after ${run.settled} of ${run.jobs} jobs` : '',
          run.notPassed > 0 ? `${run.notPassed} jobs did not pass` : '',
        ].filter((text) => text !== '');
        rows.push({
          scenario: SCENARIO,
          metric: `fake, pool ${pool}: jobs/s`,
          worker: `${fixed(run.jobsPerSecond, 0)} jobs/s (${run.settled} jobs in ${fixed(run.seconds, 1)} s${problems.length > 0 ? `; ${problems.join('; ')}` : ''})`,
          baseline: baselineText(raw, run.messagesPerJob),
          target: hasTarget ? `≥ ${TARGET_JOBS_PER_SECOND} jobs/s` : '—',
          met: hasTarget && Number.isFinite(run.jobsPerSecond) ? (run.jobsPerSecond >= TARGET_JOBS_PER_SECOND ? 'yes' : 'no') : 'n/a',
          note: `${fixed((100 * run.jobsPerSecond * run.messagesPerJob) / raw.perSecond, 0)}% of the broker's raw rate`,
          data: { ...run, rawMessagesPerSecond: raw.perSecond, rawMessages: raw.messages },
        });
      } catch (err) {
        context.signal.throwIfAborted();
        rows.push(failedRow(SCENARIO, `fake, pool ${pool}`, err));
      }
    }
    return rows;
  },
};
