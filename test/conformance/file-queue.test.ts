/**
 * The file queue passes the queue conformance suite in a directory of its
 * own. What it reported is read back from its directories as an operator
 * would: the stage a job file is in, its `.state` and log files, and the
 * files set aside with an `.error` beside them.
 */
import { randomBytes } from 'node:crypto';
import { watch } from 'node:fs';
import { mkdtemp, readFile, readdir, readlink, rename, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { silentLogger } from '../../src/logger.js';
import type { JobState } from '../../src/queue/contract.js';
import { STAGES, type Stage } from '../../src/queue/file/layout.js';
import { FileJobQueue } from '../../src/queue/file/queue.js';
import { FILE_SETTLE_MS } from '../../src/queue/file/source.js';
import { describeQueueConformance } from './queue-conformance.js';

const PAYLOAD_MAX_BYTES = 1024 * 1024;
/** TRAVIS_WORKER_FILE_POLLING_INTERVAL's default: the queue's watch, not its polling, should wake the sources. */
const POLLING_INTERVAL_MS = 5000;

/** `undefined` when the file is not there. */
async function readIfThere(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/** Resolves with `look()`'s answer once it has one, looking again on each change in `dir`; rejects when `signal` aborts. */
function whenFound<T>(dir: string, look: () => Promise<T | undefined>, signal: AbortSignal): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let done = false;
    const finish = (settle: () => void): void => {
      if (done) return;
      done = true;
      watcher.close();
      signal.removeEventListener('abort', onAbort);
      settle();
    };
    const onAbort = (): void => finish(() => reject(signal.reason));
    const lookAgain = (): void => {
      look().then(
        (found) => found !== undefined && finish(() => resolve(found)),
        (err: unknown) => finish(() => reject(err)),
      );
    };
    // Watching first, then looking: a change between the two is not missed.
    const watcher = watch(dir, lookAgain);
    signal.addEventListener('abort', onAbort, { once: true });
    if (signal.aborted) onAbort();
    else lookAgain();
  });
}

describeQueueConformance('file', { commands: false, connectionLoss: false }, async () => {
  const base = await mkdtemp(join(tmpdir(), 'mayfly-conformance-file-'));

  return {
    async target() {
      const queueName = `builds-${randomBytes(4).toString('hex')}`;
      const root = join(base, queueName);
      const dir = (stage: Stage | 'log'): string => join(root, stage === 'log' ? 'log' : STAGES[stage]);
      /** Job files are named in publishing order (the queue takes the oldest-named first) and by job. */
      let published = 0;
      const stems = new Map<number, string>();
      const stemOf = (jobId: number): string => {
        const stem = stems.get(jobId);
        if (stem === undefined) throw new Error(`job ${jobId} was never published`);
        return stem;
      };

      return {
        createQueue: () =>
          new FileJobQueue({
            config: { baseDir: base, pollingIntervalMs: POLLING_INTERVAL_MS, echoLogs: false },
            queueName,
            logger: silentLogger,
            payloadMaxBytes: PAYLOAD_MAX_BYTES,
          }),
        async publish(body) {
          const jobId = typeof body === 'string' ? undefined : (body.job as { id: number }).id;
          const stem = `${String(++published).padStart(4, '0')}-${jobId ?? 'not-a-job'}`;
          if (jobId !== undefined) stems.set(jobId, stem);
          // A producer's finished write, moved in whole: older than FILE_SETTLE_MS, so a
          // body that doesn't parse is rejected, not taken for one still being written.
          const incoming = join(base, `${queueName}-${stem}.json`);
          await writeFile(incoming, typeof body === 'string' ? body : JSON.stringify(body));
          const written = new Date(Date.now() - 2 * FILE_SETTLE_MS);
          await utimes(incoming, written, written);
          await rename(incoming, join(dir('created'), `${stem}.json`));
        },
        reader: {
          async lastState(jobId) {
            const stem = stemOf(jobId);
            const terminal = await readIfThere(join(dir('finished'), `${stem}.state`));
            if (terminal !== undefined) return terminal as JobState;
            const [started, received] = await Promise.all([readdir(dir('started')), readdir(dir('received'))]);
            if (started.includes(`${stem}.json`)) return 'started';
            if (received.includes(`${stem}.json`)) return 'received';
            return undefined;
          },
          async log(jobId) {
            return (await readIfThere(join(dir('log'), `${stemOf(jobId)}.log`))) ?? '';
          },
          async rejected(count, signal) {
            const errors = await whenFound(
              dir('finished'),
              async () => {
                const found = (await readdir(dir('finished'))).filter((name) => name.endsWith('.error')).sort();
                return found.length >= count ? found.slice(0, count) : undefined;
              },
              signal,
            );
            return Promise.all(errors.map((name) => readFile(join(dir('finished'), name.replace(/\.error$/, '.json')), 'utf8')));
          },
        },
        async leftovers() {
          const claimed = [...(await readdir(dir('received'))), ...(await readdir(dir('started')))].map((name) => `${name} claimed and never settled`);
          // What the process still holds open in the queue's directories (a job's log file).
          const open: string[] = [];
          for (const fd of await readdir('/proc/self/fd')) {
            const path = await readlink(join('/proc/self/fd', fd)).catch(() => '');
            if (path.startsWith(`${root}/`)) open.push(`${path} still open`);
          }
          return [...claimed, ...open];
        },
      };
    },
    async close() {
      await rm(base, { recursive: true, force: true });
    },
  };
});
