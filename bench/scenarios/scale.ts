/**
 * Scenario 4, scale: N jobs running at once in one worker process on the
 * `ssh` backend (one job per host, so N sshd targets on their own loopback
 * addresses), each blocked reading a FIFO until the bench opens it. The
 * worker runs in its own process; its memory is the kernel's count
 * (/proc/<pid>/status), read after a garbage collection:
 *
 * - idle: the worker started with pool N and N hosts, no job;
 * - running: every job's script has printed its first line (so every SSH
 *   session, terminal and log writer is live);
 * - per job: (running - idle) / N; the peak (VmHWM) includes the ramp-up.
 *
 * Baseline: what one OpenSSH client process holding such a session takes.
 */
import { spawn, execFileSync } from 'node:child_process';
import { closeSync, constants, openSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { kernelMemory } from '../child-process.js';
import { jobIds, sshEnv, startBenchWorker, targets, type BenchContext, type Scenario } from '../context.js';
import { sshCommand } from '../openssh.js';
import type { Row } from '../report.js';
import { fixed } from '../stats.js';
import type { SshdTarget } from '../../test/helpers/sshd.js';

const SCENARIO = 'scale';
/** The target (docs/benchmarks.md): memory per concurrent job above the idle worker. */
const TARGET_MB_PER_JOB = 0.5;
const MiB = 2 ** 20;
/** How often the FIFO is opened to let the waiting scripts go. */
const RELEASE_POLL_MS = 100;
/**
 * Jobs are published in waves of this many, each once the previous wave is
 * running: the sshd targets share the worker's two cores, and 500 SSH
 * handshakes at once (sshd re-executes itself for each) would starve each
 * other past the dial timeout. The measure is memory while running, not
 * the start-up storm.
 */
const WAVE = 50;
/** The targets share the CPU with everything else: be patient with a handshake. */
const DIAL_TIMEOUT = '30s';

/** Open and close the FIFO for writing: every script blocked opening it reads EOF. False when nobody waits on it. */
function releaseWaiters(fifo: string): boolean {
  try {
    closeSync(openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK));
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENXIO') return false;
    throw err;
  }
}

/** Keep releasing until `done()` (scripts that reach the FIFO later need another open). */
async function releaseUntil(fifo: string, done: () => boolean, signal: AbortSignal): Promise<void> {
  while (!done()) {
    signal.throwIfAborted();
    releaseWaiters(fifo);
    await new Promise((resolve) => setTimeout(resolve, RELEASE_POLL_MS));
  }
}

/** RSS of one OpenSSH client holding a session that waits on the FIFO. */
async function openSshSessionRss(context: BenchContext, target: SshdTarget, fifo: string, signal: AbortSignal): Promise<number> {
  const command = sshCommand(target, context.key.path, `echo ready; read -r _ < ${fifo} || true`);
  const client = spawn('bash', ['-c', `exec ${command}`], { stdio: ['ignore', 'pipe', 'inherit'], signal, killSignal: 'SIGKILL' });
  client.once('error', () => undefined);
  const exited = new Promise<void>((resolve) => client.once('close', () => resolve()));
  try {
    await new Promise<void>((resolve, reject) => {
      client.stdout.on('data', (chunk: Buffer) => {
        if (chunk.toString().includes('ready')) resolve();
      });
      client.once('close', () => reject(new Error('ssh exited before its session was ready')));
    });
    return kernelMemory(client.pid as number).rssBytes;
  } finally {
    let released = false;
    while (!released && client.exitCode === null && client.signalCode === null) {
      released = releaseWaiters(fifo);
      if (!released) await new Promise((resolve) => setTimeout(resolve, RELEASE_POLL_MS));
    }
    await exited;
  }
}

async function measure(context: BenchContext, list: SshdTarget[], signal: AbortSignal): Promise<Row[]> {
  const count = list.length;
  const fifo = join(context.tmp, 'release.fifo');
  execFileSync('mkfifo', [fifo]);
  const sessionRss = await openSshSessionRss(context, list[0] as SshdTarget, fifo, signal);

  const queue = 'builds.bench-scale';
  const { broker } = context;
  await broker.declareJobQueue(queue);
  const worker = await startBenchWorker(context, `scale-${count}`, {
    ...sshEnv(context, list),
    TRAVIS_WORKER_SSH_DIAL_TIMEOUT: DIAL_TIMEOUT,
    TRAVIS_WORKER_QUEUE_NAME: queue,
    TRAVIS_WORKER_POOL_SIZE: String(count),
  });
  try {
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    await worker.usage(signal); // collects garbage
    const idle = worker.memory();

    const ids = jobIds(count);
    const waiting = new Set(ids);
    const stopListening = broker.onLog((part) => {
      if (waiting.has(part.jobId) && part.log.includes('$ read')) waiting.delete(part.jobId);
    });
    try {
      for (let first = 0; first < count; first += WAVE) {
        const wave = ids.slice(first, first + WAVE);
        for (const id of wave) broker.publishJob(queue, id, [`read -r _ < ${fifo} || true`]);
        // Every script of the wave printed its first line: its session is live.
        while (wave.some((id) => waiting.has(id))) {
          signal.throwIfAborted();
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
        context.progress(`scale: ${first + wave.length} of ${count} jobs running`);
      }
    } finally {
      stopListening();
    }
    context.progress(`scale: ${count} jobs running; measuring`);
    const beforeGc = worker.memory();
    await worker.usage(signal);
    const running = worker.memory();
    const fds = readdirSync(`/proc/${worker.pid}/fd`).length;

    context.progress(`scale: releasing ${count} jobs`);
    await releaseUntil(fifo, () => ids.every((id) => broker.jobs.get(id)?.terminalUs !== undefined), signal);
    const notPassed = ids.filter((id) => broker.jobs.get(id)?.terminalState !== 'passed').length;

    const perJob = (running.rssBytes - idle.rssBytes) / count;
    const peakPerJob = (running.peakRssBytes - idle.rssBytes) / count;
    return [
      {
        scenario: SCENARIO,
        metric: `${count} concurrent ssh jobs: RSS per job above idle`,
        worker: `${fixed(perJob / MiB, 3)} MiB/job (idle ${fixed(idle.rssBytes / MiB, 0)} MiB → ${fixed(running.rssBytes / MiB, 0)} MiB with ${count} running)`,
        baseline: `one OpenSSH client session: ${fixed(sessionRss / MiB, 1)} MiB RSS`,
        target: `< ${TARGET_MB_PER_JOB} MB/job`,
        met: perJob / 1e6 < TARGET_MB_PER_JOB && notPassed === 0 ? 'yes' : 'no',
        note: notPassed === 0 ? `${fixed(perJob / 1e6, 3)} MB` : `${notPassed} jobs did not pass`,
        data: { count, idle, beforeGc, running, perJobBytes: perJob, sessionRssBytes: sessionRss, fds, notPassed },
      },
      {
        scenario: SCENARIO,
        metric: `${count} concurrent ssh jobs: peak RSS`,
        worker: `${fixed(running.peakRssBytes / MiB, 0)} MiB (${fixed(peakPerJob / MiB, 3)} MiB/job above idle; ${fds} fds)`,
        baseline: `${count} OpenSSH clients ≈ ${fixed((count * sessionRss) / MiB, 0)} MiB`,
        target: '—',
        met: 'n/a',
      },
    ];
  } finally {
    // Scripts still blocked would keep their sessions (and the worker's stop) waiting.
    releaseWaiters(fifo);
    await worker.release();
  }
}

export const scale: Scenario = {
  name: SCENARIO,
  description: '500 concurrent sleeping jobs on ssh (500 sshd targets) in one worker: peak RSS, RSS per job',
  async run(context) {
    const count = context.quick ? 50 : 500;
    const signal = AbortSignal.any([context.signal, AbortSignal.timeout(context.quick ? 90_000 : 300_000)]);
    context.progress(`scale: starting ${count} sshd targets`);
    const started = await targets(context, count);
    try {
      return await measure(context, started.list, signal);
    } finally {
      context.progress(`scale: stopping ${count} sshd targets`);
      await started.release();
    }
  },
};
