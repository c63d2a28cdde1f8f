/**
 * Scenario 3, log streaming over real sshd: a job whose script prints
 * 4.5 MB (just under the default maximum log length) and one printing
 * 100 MB (limit raised), as fast as the terminal takes it, every line
 * stamped with its print time (bench/log-generator.ts). Measured:
 *
 * - MB/s from the first line printed on the "VM" to the final log part
 *   received by a consumer (bytes as they arrive: a terminal adds a CR
 *   per line);
 * - the worker process's CPU seconds per MB (its own process: the bench's
 *   consumer is elsewhere);
 * - per line, printed -> the part holding its end received (p50, p99).
 *
 * Baselines on the same target: OpenSSH `ssh host cat FILE > /dev/null`
 * (the largest size, median of three, connection setup, the p50 of
 * `ssh host true`, subtracted): the raw SSH rate; and the same generator
 * under a terminal through OpenSSH (`ssh -tt`), timed from its first
 * write to the client's exit: what a terminal allows.
 */
import { createWriteStream, readFileSync } from 'node:fs';
import { once } from 'node:events';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { rawPublishConsumeRate } from '../amqp-baselines.js';
import type { BenchChild } from '../child-process.js';
import { failedRow, jobIds, sshEnv, startBenchWorker, targets, type BenchContext, type Scenario } from '../context.js';
import { LINE_BYTES } from '../log-generator.js';
import { runOpenSsh } from '../openssh.js';
import type { Row } from '../report.js';
import { fixed, summarize, wallUs, type Summary } from '../stats.js';
import type { SshdTarget } from '../../test/helpers/sshd.js';

const SCENARIO = 'logs';
const GENERATOR = fileURLToPath(new URL('../log-generator.js', import.meta.url));
/** travis' flush interval (src/job-log/writer.ts LOG_FLUSH_INTERVAL_MS) + 50 ms: the bound on p99 delay (docs/benchmarks.md). */
const DELAY_TARGET_MS = 500 + 50;
/** The worker should stream at least this share of the raw SSH rate. */
const RATE_TARGET_SHARE = 0.5;
/** travis' default TRAVIS_WORKER_MAX_LOG_LENGTH. */
const DEFAULT_MAX_LOG = 4_500_000;
/** travis' largest log part (src/job-log/writer.ts LOG_PART_MAX_BYTES): one AMQP message each. */
const PART_BYTES = 1653;
/** A full log part as the worker publishes it, for the broker's own rate. */
const PART_BODY = Buffer.from(
  JSON.stringify({ id: 1, log: `${'x'.repeat(99)}\r\n`.repeat(17).slice(0, PART_BYTES), number: 1, uuid: 'x'.repeat(36), final: false }),
);
/** A terminal turns each `\n` into `\r\n`. */
const PTY_LINE_BYTES = LINE_BYTES + 1;
const MB = 1e6;
/** Lines the warm-up job prints (2 MB): enough for V8 to optimise the log path before the measured job. */
const WARMUP_LINES = 20_000;

interface Size {
  label: string;
  lines: number;
  /** TRAVIS_WORKER_MAX_LOG_LENGTH; undefined = the default. */
  maxLog?: number;
}

interface WorkerStream {
  bytes: number;
  lines: number;
  seconds: number;
  mbPerSecond: number;
  cpuSecondsPerMb: number;
  delay: Summary;
  state: string;
}

interface Baseline {
  catMbPerSecond: number;
  catCpuSecondsPerMb: number;
  ptyMbPerSecond: number;
  /** The broker's raw publish/consume rate of full log parts, in MB of log per second: the protocol's ceiling here. */
  brokerMbPerSecond: number;
}

/** OpenSSH `cat` of the largest file, the median of this many runs: small files time mostly the connection. */
const CAT_RUNS = 3;

interface RawCat {
  mbPerSecond: number;
  cpuSecondsPerMb: number;
}

/** A file of `lines` lines of LINE_BYTES bytes, as the generator prints them (without stamps). */
async function writePayloadFile(path: string, lines: number): Promise<void> {
  const chunkLines = 10_000;
  const chunk = Buffer.alloc(LINE_BYTES * chunkLines, 'x');
  for (let i = 1; i <= chunkLines; i++) chunk[i * LINE_BYTES - 1] = 0x0a;
  const out = createWriteStream(path);
  for (let written = 0; written < lines; written += chunkLines) {
    const count = Math.min(chunkLines, lines - written);
    if (!out.write(chunk.subarray(0, count * LINE_BYTES))) await once(out, 'drain');
  }
  out.end();
  await once(out, 'finish');
}

/** The raw SSH rate: OpenSSH `cat FILE > /dev/null` of `lines` lines, connection setup (`ssh host true`, p50) subtracted. */
async function measureRawCat(context: BenchContext, target: SshdTarget, lines: number, sshTrueMs: number): Promise<RawCat> {
  const file = join(context.tmp, `payload-${lines}.txt`);
  await writePayloadFile(file, lines);
  const mb = (lines * LINE_BYTES) / MB;
  const runs: RawCat[] = [];
  for (let i = 0; i < CAT_RUNS; i++) {
    const cat = await runOpenSsh(target, context.key.path, `cat ${file}`, { signal: context.signal });
    runs.push({ mbPerSecond: mb / (Math.max(1, cat.elapsedMs - sshTrueMs) / 1000), cpuSecondsPerMb: cat.cpuMs / 1000 / mb });
  }
  runs.sort((a, b) => a.mbPerSecond - b.mbPerSecond);
  return runs[Math.floor(runs.length / 2)] as RawCat;
}

/** The same generator under a terminal through OpenSSH: first write to the client's exit. */
async function measurePtyGenerator(context: BenchContext, target: SshdTarget, size: Size): Promise<number> {
  const startFile = join(context.tmp, `start-${size.lines}`);
  await runOpenSsh(target, context.key.path, `${process.execPath} ${GENERATOR} ${size.lines} ${startFile}`, { tty: true, signal: context.signal });
  const endUs = wallUs();
  const firstWriteUs = Number(readFileSync(startFile, 'utf8'));
  return (size.lines * PTY_LINE_BYTES) / MB / ((endUs - firstWriteUs) / 1e6);
}

async function measureWorker(context: BenchContext, worker: BenchChild, queue: string, size: Size): Promise<WorkerStream> {
  const [id] = jobIds(1) as [number];
  const delays: number[] = [];
  let bytes = 0;
  let carry = '';
  let firstStampUs = Number.NaN;
  let finalUs = Number.NaN;
  const stopListening = context.broker.onLog((part) => {
    if (part.jobId !== id) return;
    bytes += Buffer.byteLength(part.log);
    if (part.final) finalUs = part.receiptUs;
    const lines = (carry + part.log).split('\n');
    carry = lines.pop() ?? '';
    for (const line of lines) {
      if (line.charCodeAt(0) !== 0x40 /* @ */) continue;
      const stampUs = Number(line.slice(1, 17));
      if (Number.isNaN(firstStampUs)) firstStampUs = stampUs;
      delays.push((part.receiptUs - stampUs) / 1000);
    }
  });
  const settled = new Promise<void>((resolve) => {
    const stop = worker.onJobDone((done) => {
      if (done.jobId !== id) return;
      stop();
      resolve();
    });
  });
  try {
    // A first job pays for JIT and lazy initialisation; the measured one should not.
    // It streams a log too: a worker that has run one job has its log path compiled.
    const [warmup] = jobIds(1) as [number];
    context.broker.publishJob(queue, warmup, [`${process.execPath} ${GENERATOR} ${WARMUP_LINES}`]);
    await context.broker.terminal(warmup, context.signal);
    const before = await worker.usage(context.signal);
    context.broker.publishJob(queue, id, [`${process.execPath} ${GENERATOR} ${size.lines}`]);
    const times = await context.broker.terminal(id, context.signal);
    await settled;
    const after = await worker.usage(context.signal);
    const seconds = (finalUs - firstStampUs) / 1e6;
    const cpuSeconds = (after.userUs + after.systemUs - before.userUs - before.systemUs) / 1e6;
    return {
      bytes,
      lines: delays.length,
      seconds,
      mbPerSecond: bytes / MB / seconds,
      cpuSecondsPerMb: cpuSeconds / (bytes / MB),
      delay: summarize(delays),
      state: times.terminalState ?? 'unknown',
    };
  } finally {
    stopListening();
  }
}

function sizeRows(size: Size, stream: WorkerStream, baseline: Baseline): Row[] {
  const share = stream.mbPerSecond / baseline.catMbPerSecond;
  const complete = stream.lines === size.lines && stream.state === 'passed';
  const incomplete = complete ? '' : `; only ${stream.lines} of ${size.lines} lines, job ${stream.state}`;
  return [
    {
      scenario: SCENARIO,
      metric: `${size.label}: VM → log parts received, MB/s`,
      worker: `${fixed(stream.mbPerSecond, 1)} MB/s (${fixed(stream.bytes / MB, 1)} MB in ${fixed(stream.seconds, 2)} s${incomplete})`,
      baseline: `OpenSSH cat ${fixed(baseline.catMbPerSecond, 1)} MB/s; same generator via ssh -tt ${fixed(baseline.ptyMbPerSecond, 1)} MB/s; broker, one message per ${PART_BYTES}-byte part, ${fixed(baseline.brokerMbPerSecond, 1)} MB/s`,
      target: `≥ ${RATE_TARGET_SHARE * 100}% of raw SSH`,
      met: Number.isFinite(share) ? (share >= RATE_TARGET_SHARE && complete ? 'yes' : 'no') : 'n/a',
      note: `${fixed(share * 100, 0)}% of raw SSH; ${fixed((stream.mbPerSecond / baseline.brokerMbPerSecond) * 100, 0)}% of the broker's rate for log parts`,
      data: { ...stream, ...baseline, share },
    },
    {
      scenario: SCENARIO,
      metric: `${size.label}: worker CPU per MB`,
      worker: `${fixed(stream.cpuSecondsPerMb * 1000, 1)} ms/MB`,
      baseline: `OpenSSH client (cat) ${fixed(baseline.catCpuSecondsPerMb * 1000, 1)} ms/MB`,
      target: '—',
      met: 'n/a',
    },
    {
      scenario: SCENARIO,
      metric: `${size.label}: line printed → its part received`,
      worker: `p50 ${fixed(stream.delay.p50, 0)} ms · p99 ${fixed(stream.delay.p99, 0)} ms (${stream.delay.n} lines)`,
      baseline: '—',
      target: `p99 < ${DELAY_TARGET_MS} ms`,
      met: Number.isFinite(stream.delay.p99) ? (stream.delay.p99 < DELAY_TARGET_MS ? 'yes' : 'no') : 'n/a',
    },
  ];
}

async function runSize(context: BenchContext, target: SshdTarget, size: Size, raw: RawCat, brokerMbPerSecond: number): Promise<Row[]> {
  context.progress(`logs: ${size.label}: the generator through OpenSSH ssh -tt`);
  const baseline: Baseline = {
    catMbPerSecond: raw.mbPerSecond,
    catCpuSecondsPerMb: raw.cpuSecondsPerMb,
    ptyMbPerSecond: await measurePtyGenerator(context, target, size),
    brokerMbPerSecond,
  };
  const queue = 'builds.bench-logs';
  await context.broker.declareJobQueue(queue);
  const worker = await startBenchWorker(context, `logs-${size.lines}`, {
    ...sshEnv(context, [target]),
    TRAVIS_WORKER_QUEUE_NAME: queue,
    TRAVIS_WORKER_POOL_SIZE: '1',
    ...(size.maxLog === undefined ? {} : { TRAVIS_WORKER_MAX_LOG_LENGTH: String(size.maxLog) }),
  });
  try {
    context.progress(`logs: ${size.label}: through the worker`);
    return sizeRows(size, await measureWorker(context, worker, queue, size), baseline);
  } finally {
    await worker.release();
  }
}

export const logs: Scenario = {
  name: SCENARIO,
  description: 'log streaming over sshd (4.5 MB, 100 MB): MB/s, worker CPU/MB, line → part delay, beside OpenSSH cat',
  async run(context) {
    // 4.5 MB: as many lines as fit under the default maximum with room for the worker's own lines.
    const sizes: Size[] = [
      { label: '4.5 MB', lines: Math.floor((DEFAULT_MAX_LOG - 10_000) / PTY_LINE_BYTES) },
      context.quick ? { label: '20 MB', lines: 200_000, maxLog: 200_000_000 } : { label: '100 MB', lines: 1_000_000, maxLog: 200_000_000 },
    ];
    const started = await targets(context, 1);
    try {
      const target = started.list[0] as SshdTarget;
      const sshTrue: number[] = [];
      for (let i = 0; i < 6; i++) sshTrue.push((await runOpenSsh(target, context.key.path, 'true', { signal: context.signal })).elapsedMs);
      const sshTrueMs = summarize(sshTrue.slice(1)).p50;
      const largest = Math.max(...sizes.map((size) => size.lines));
      context.progress(`logs: OpenSSH cat of ${fixed((largest * LINE_BYTES) / MB, 0)} MB × ${CAT_RUNS}`);
      const raw = await measureRawCat(context, target, largest, sshTrueMs);
      // The worker publishes one persistent, confirmed message per part: the broker's rate for those bounds the worker's.
      context.progress('logs: the broker publishing and delivering full log parts');
      const brokerRate = await rawPublishConsumeRate(context, context.quick ? 10_000 : 30_000, PART_BODY);
      const brokerMbPerSecond = (brokerRate.perSecond * PART_BYTES) / MB;
      const rows: Row[] = [];
      for (const size of sizes) {
        try {
          rows.push(...(await runSize(context, target, size, raw, brokerMbPerSecond)));
        } catch (err) {
          context.signal.throwIfAborted();
          rows.push(failedRow(SCENARIO, size.label, err));
        }
      }
      return rows;
    } finally {
      await started.release();
    }
  },
};
