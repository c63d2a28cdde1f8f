/**
 * Scenario 1, per-job overhead: trivial jobs one at a time (the next is
 * published once the previous one is settled), on `fake` (an instant
 * instance) and on `ssh` (a real sshd on loopback), each timed by the
 * bench on receipt of its state updates:
 *
 * - publish -> `received` and publish -> `started`: two broker hops
 *   (bench -> worker -> bench) plus the worker's work; the baseline is the
 *   same two hops through a raw amqplib echo process, plus, on ssh, one
 *   `ssh host true` with OpenSSH (connect, authenticate, run a command);
 * - script exit -> terminal state: on ssh the script's last command prints
 *   `date +%s%N`, so this covers bash ending, the SSH channel closing, the
 *   last log parts confirmed, and the terminal state's hop (baseline: one
 *   raw hop); the fake's script takes no time, so there it is `started` ->
 *   terminal (both ends one hop: no baseline).
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { echoRoundTrip, oneHopLatency } from '../amqp-baselines.js';
import type { BenchChild } from '../child-process.js';
import { failedRow, jobIds, sshEnv, startBenchWorker, targets, type BenchContext, type Scenario } from '../context.js';
import { captureOpenSsh, runOpenSsh } from '../openssh.js';
import type { Row } from '../report.js';
import { fixed, formatLatency, summarize, type Summary } from '../stats.js';
import type { SshdTarget } from '../../test/helpers/sshd.js';

const SCENARIO = 'overhead';
/** The target (docs/benchmarks.md): the worker adds under 5 ms (p50) to the baselines. */
const ADDED_P50_TARGET_MS = 5;
/** Jobs run and discarded first: connections, JIT, the first SFTP session. */
const WARMUP_JOBS = 3;
/** The script's last command prints this with the wall clock in ns (19 digits). */
const EXIT_MARKER = /@exit (\d{19})/;
const EXIT_SCRIPT = ['echo "@exit $(date +%s%N)"'];

interface Counts {
  amqp: number;
  fake: number;
  ssh: number;
  sshTrue: number;
}

interface JobSample {
  receivedMs: number;
  startedMs: number;
  /** fake: started -> terminal; ssh: printed marker -> terminal. */
  endMs: number;
}

/**
 * Run `count` jobs of `script` one after another; each is timed once its
 * terminal state is received and the worker has settled it (so the next
 * one never waits for the previous one's cleanup). `endStartUs` says
 * where a job's "script exit" is.
 */
async function runSequentially(
  context: BenchContext,
  worker: BenchChild,
  queue: string,
  count: number,
  script: string[],
  endStartUs: (id: number, startedUs: number) => number,
): Promise<JobSample[]> {
  const samples: JobSample[] = [];
  for (const id of jobIds(count + WARMUP_JOBS)) {
    const settled = new Promise<void>((resolve) => {
      const stop = worker.onJobDone((done) => {
        if (done.jobId !== id) return;
        stop();
        resolve();
      });
    });
    const publishedUs = context.broker.publishJob(queue, id, script);
    const times = await context.broker.terminal(id, context.signal);
    await settled;
    if (times.terminalState !== 'passed') throw new Error(`job ${id} ended ${times.terminalState}, not passed`);
    const { receivedUs = Number.NaN, startedUs = Number.NaN, terminalUs = Number.NaN } = times;
    samples.push({
      receivedMs: (receivedUs - publishedUs) / 1000,
      startedMs: (startedUs - publishedUs) / 1000,
      endMs: (terminalUs - endStartUs(id, startedUs)) / 1000,
    });
  }
  return samples.slice(WARMUP_JOBS);
}

function overheadRow(metric: string, worker: Summary, baselineText: string, baselineP50: number): Row {
  const added = worker.p50 - baselineP50;
  return {
    scenario: SCENARIO,
    metric,
    worker: formatLatency(worker),
    baseline: baselineText,
    target: `added p50 < ${ADDED_P50_TARGET_MS} ms`,
    met: Number.isFinite(added) ? (added < ADDED_P50_TARGET_MS ? 'yes' : 'no') : 'n/a',
    note: `${added >= 0 ? '+' : '−'}${fixed(Math.abs(added), 2)} ms`,
    data: { worker, baselineP50Ms: baselineP50, addedP50Ms: added },
  };
}

async function fakeRows(context: BenchContext, counts: Counts, echo: Summary): Promise<Row[]> {
  const queue = 'builds.bench-overhead-fake';
  await context.broker.declareJobQueue(queue);
  const worker = await startBenchWorker(context, 'overhead-fake', {
    TRAVIS_WORKER_PROVIDER_NAME: 'fake',
    TRAVIS_WORKER_QUEUE_NAME: queue,
    TRAVIS_WORKER_POOL_SIZE: '1',
  });
  try {
    context.progress(`overhead: ${counts.fake} jobs on fake`);
    const samples = await runSequentially(context, worker, queue, counts.fake, ['true'], (_, startedUs) => startedUs);
    const echoText = `AMQP 2-hop echo ${formatLatency(echo)}`;
    const end = summarize(samples.map((s) => s.endMs));
    return [
      overheadRow('fake: publish → received', summarize(samples.map((s) => s.receivedMs)), echoText, echo.p50),
      overheadRow('fake: publish → started', summarize(samples.map((s) => s.startedMs)), echoText, echo.p50),
      overheadRow('fake: started → terminal (script takes 0 s)', end, '— (both ends one hop)', 0),
    ];
  } finally {
    await worker.release();
  }
}

async function sshRows(context: BenchContext, counts: Counts, echo: Summary, hop: Summary): Promise<Row[]> {
  const started = await targets(context, 1);
  try {
    return await sshRowsOn(context, counts, echo, hop, started.list[0] as SshdTarget);
  } finally {
    await started.release();
  }
}

async function sshRowsOn(context: BenchContext, counts: Counts, echo: Summary, hop: Summary, target: SshdTarget): Promise<Row[]> {
  context.progress(`overhead: ${counts.sshTrue} × OpenSSH ssh host true`);
  const sshTrue: number[] = [];
  for (let i = 0; i < counts.sshTrue + 1; i++) {
    const run = await runOpenSsh(target, context.key.path, 'true', { signal: context.signal });
    if (i > 0) sshTrue.push(run.elapsedMs); // the first pays for cold caches
  }
  const sshTrueSummary = summarize(sshTrue);

  // The same end of a script through OpenSSH under a terminal: marker printed -> client exited.
  context.progress(`overhead: ${counts.sshTrue} × OpenSSH ssh -tt host 'bash exit-marker.sh'`);
  const markerScript = join(context.tmp, 'exit-marker.sh');
  writeFileSync(markerScript, `${EXIT_SCRIPT.join('\n')}\nprintf '\\nDone. Your build exited with 0.\\n'\nexit 0\n`);
  const markerToExit: number[] = [];
  for (let i = 0; i < counts.sshTrue; i++) {
    const run = await captureOpenSsh(target, context.key.path, `bash ${markerScript}`, { tty: true, signal: context.signal });
    const marker = EXIT_MARKER.exec(run.stdout)?.[1];
    if (marker === undefined) throw new Error(`no exit marker in the output of ${markerScript}`);
    markerToExit.push((run.exitUs - Number(BigInt(marker) / 1000n)) / 1000);
  }
  const markerSummary = summarize(markerToExit);

  const queue = 'builds.bench-overhead-ssh';
  await context.broker.declareJobQueue(queue);
  const worker = await startBenchWorker(context, 'overhead-ssh', {
    ...sshEnv(context, [target]),
    TRAVIS_WORKER_QUEUE_NAME: queue,
    TRAVIS_WORKER_POOL_SIZE: '1',
  });
  // The marker's print time, per job, from the log parts.
  const exitUs = new Map<number, number>();
  const logText = new Map<number, string>();
  const stopListening = context.broker.onLog((part) => {
    const text = (logText.get(part.jobId) ?? '') + part.log;
    logText.set(part.jobId, text);
    const match = EXIT_MARKER.exec(text);
    if (match?.[1] !== undefined && !exitUs.has(part.jobId)) exitUs.set(part.jobId, Number(BigInt(match[1]) / 1000n));
  });
  try {
    context.progress(`overhead: ${counts.ssh} jobs on ssh`);
    const samples = await runSequentially(context, worker, queue, counts.ssh, EXIT_SCRIPT, (id) => exitUs.get(id) ?? Number.NaN);
    const echoText = `AMQP 2-hop echo ${formatLatency(echo)}`;
    return [
      overheadRow('ssh: publish → received', summarize(samples.map((s) => s.receivedMs)), echoText, echo.p50),
      overheadRow(
        'ssh: publish → started',
        summarize(samples.map((s) => s.startedMs)),
        `AMQP 2-hop echo p50 ${fixed(echo.p50, 2)} ms + OpenSSH \`ssh host true\` ${formatLatency(sshTrueSummary)}`,
        echo.p50 + sshTrueSummary.p50,
      ),
      overheadRow(
        'ssh: script exit (marker printed) → terminal',
        summarize(samples.map((s) => s.endMs)),
        `OpenSSH marker printed → client exit ${formatLatency(markerSummary)} + AMQP 1 hop p50 ${fixed(hop.p50, 2)} ms`,
        markerSummary.p50 + hop.p50,
      ),
    ];
  } finally {
    stopListening();
    await worker.release();
  }
}

export const overhead: Scenario = {
  name: SCENARIO,
  description: 'per-job overhead on fake and ssh: publish → received/started, script exit → terminal (p50, p99)',
  async run(context) {
    const counts: Counts = context.quick ? { amqp: 100, fake: 30, ssh: 15, sshTrue: 10 } : { amqp: 500, fake: 200, ssh: 60, sshTrue: 40 };
    context.progress(`overhead: AMQP baselines (${counts.amqp} messages each)`);
    const hop = await oneHopLatency(context, counts.amqp);
    const echo = await echoRoundTrip(context, counts.amqp);
    const rows: Row[] = [];
    try {
      rows.push(...(await fakeRows(context, counts, echo)));
    } catch (err) {
      context.signal.throwIfAborted();
      rows.push(failedRow(SCENARIO, 'fake backend', err));
    }
    try {
      rows.push(...(await sshRows(context, counts, echo, hop)));
    } catch (err) {
      context.signal.throwIfAborted();
      rows.push(failedRow(SCENARIO, 'ssh backend', err));
    }
    return rows;
  },
};
