/**
 * The `file` job queue, the embedded default (docs/protocol.md, "The file queue"):
 * `<base>/<queue>/{10-created.d,30-received.d,50-started.d,70-finished.d}`,
 * a job being a `<id>.json` payload moved from stage to stage. The log of a
 * job is written to `<base>/<queue>/log/<id>.log` (as travis does) and its
 * terminal state to `70-finished.d/<id>.state`.
 *
 * Several processors (and several workers) can share the directories: a job
 * is claimed by renaming it out of `10-created.d`, which only one can do.
 */
import { createHash } from 'node:crypto';
import { constants, watch, type FSWatcher, type Stats } from 'node:fs';
import { mkdir, open, readdir, rename, writeFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { FileQueueConfig } from '../../config.js';
import { errorMessage } from '../../errors.js';
import type { Logger } from '../../logger.js';
import { parseJobPayload, type JobPayload } from '../../job/payload.js';
import { abortableSleep } from '../../util/abort.js';
import type { CancelCommand, JobQueue, JobSource, LogPart, LogSink, QueuedJob, TerminalState } from '../contract.js';

/**
 * A writer that does not write atomically (a temporary name, then a rename
 * into `10-created.d`) may be caught mid-write: a payload that doesn't parse
 * and was modified this recently is put back and read again later instead
 * of being rejected. Two seconds outlast any write of a payload that fits
 * the size limit.
 */
export const FILE_SETTLE_MS = 2000;

/**
 * The longest file name, in bytes, that Linux file systems take (NAME_MAX:
 * ext4, xfs, btrfs, tmpfs).
 */
const NAME_MAX_BYTES = 255;

/** Files kept beside a job's `<id>.json`, named `<id><suffix>`. */
type SiblingSuffix = '.state' | '.error' | '.log';
const SIBLING_SUFFIXES: readonly SiblingSuffix[] = ['.state', '.error', '.log'];

/**
 * The longest job file name accepted: `<id>.json` whose every sibling
 * (`<id>.state`, the longest) still fits in NAME_MAX. A longer name would
 * run its job and then fail to record the outcome, so the job would run again.
 */
export const MAX_JOB_FILE_NAME_BYTES = NAME_MAX_BYTES - Math.max(...SIBLING_SUFFIXES.map((suffix) => Buffer.byteLength(suffix))) + '.json'.length;

/** The name of the file kept beside job file `name` (`<id>.json`). */
function sibling(name: string, suffix: SiblingSuffix): string {
  return name.replace(/\.json$/, suffix);
}

export const STAGES = {
  created: '10-created.d',
  received: '30-received.d',
  started: '50-started.d',
  finished: '70-finished.d',
} as const;
type Stage = keyof typeof STAGES;

export interface FileQueueOptions {
  config: FileQueueConfig;
  queueName: string;
  logger: Logger;
  payloadMaxBytes: number;
}

export class FileJobQueue implements JobQueue {
  readonly name = 'file';
  readonly root: string;
  private watcher: FSWatcher | undefined;
  /** Resolvers of sources waiting for a new file to appear. */
  private waiters = new Set<() => void>();
  /** Counts wake-ups, so a change seen while a source was busy claiming is not lost. */
  generation = 0;

  constructor(readonly options: FileQueueOptions) {
    this.root = join(options.config.baseDir, options.queueName);
  }

  dir(stage: Stage | 'log'): string {
    return join(this.root, stage === 'log' ? 'log' : STAGES[stage]);
  }

  async open(): Promise<void> {
    for (const stage of [...Object.keys(STAGES), 'log'] as (Stage | 'log')[]) {
      await mkdir(this.dir(stage), { recursive: true });
    }
    // A watch wakes idle processors at once; the polling interval is the
    // fallback for file systems where watching is not reliable (NFS).
    this.watcher = watch(this.dir('created'), () => this.wake());
    this.watcher.on('error', (err) => this.options.logger.warn({ err: errorMessage(err) }, 'file queue watch failed; polling only'));
    this.watcher.unref();
  }

  async openSource(processorId: string): Promise<JobSource> {
    return new FileJobSource(this, processorId);
  }

  onCancel(_listener: (command: CancelCommand) => void): void {
    // The file queue has no command channel.
  }

  notReadyReason(): undefined {
    // A directory on this machine: nothing to lose a connection to.
    return undefined;
  }

  onReadinessChange(_listener: (notReadyReason: string | undefined) => void): void {
    // Always ready: nothing to report.
  }

  async close(): Promise<void> {
    this.watcher?.close();
    this.wake();
  }

  /**
   * Wait until a file may have appeared in `10-created.d` since `seenGeneration`
   * (or the polling interval passed).
   */
  async waitForWork(signal: AbortSignal, seenGeneration: number): Promise<void> {
    if (this.generation !== seenGeneration) return;
    let wake!: () => void;
    const woken = new Promise<void>((resolve) => (wake = resolve));
    this.waiters.add(wake);
    try {
      await Promise.race([woken, abortableSleep(this.options.config.pollingIntervalMs, signal)]);
    } finally {
      this.waiters.delete(wake);
    }
  }

  /** Wake waiting sources after `ms` (to look again at a file that was still being written). */
  wakeAfter(ms: number): void {
    setTimeout(() => this.wake(), ms).unref();
  }

  private wake(): void {
    this.generation++;
    for (const wake of this.waiters) wake();
  }
}

class FileJobSource implements JobSource {
  private readonly closed = new AbortController();

  constructor(
    private readonly queue: FileJobQueue,
    private readonly processorId: string,
  ) {}

  async next(signal: AbortSignal): Promise<QueuedJob | undefined> {
    const stop = AbortSignal.any([signal, this.closed.signal]);
    while (!stop.aborted) {
      const seen = this.queue.generation;
      const job = await this.claimOne();
      if (job) return job;
      await this.queue.waitForWork(stop, seen).catch(() => undefined);
    }
    return undefined;
  }

  async close(): Promise<void> {
    this.closed.abort();
  }

  /** Claim the oldest-named job file by moving it to `30-received.d`. */
  private async claimOne(): Promise<QueuedJob | undefined> {
    const names = (await readdir(this.queue.dir('created')))
      .filter((name) => name.endsWith('.json'))
      .sort((a, b) => a.localeCompare(b, 'en', { numeric: true }));
    for (const name of names) {
      try {
        await rename(join(this.queue.dir('created'), name), join(this.queue.dir('received'), name));
      } catch {
        continue; // another processor claimed it first
      }
      try {
        const job = await this.admit(name);
        if (job) return job;
      } catch (err) {
        // One entry the file system won't let us handle must not cost the processor.
        this.queue.options.logger.error(
          { file: name, processor: this.processorId, err: errorMessage(err) },
          `could not handle job file; left in ${STAGES.received}`,
        );
      }
    }
    return undefined;
  }

  /** Read a claimed file: the job it holds, or undefined once it was set aside or put back. */
  private async admit(name: string): Promise<QueuedJob | undefined> {
    const { logger, payloadMaxBytes } = this.queue.options;
    const nameBytes = Buffer.byteLength(name);
    if (nameBytes > MAX_JOB_FILE_NAME_BYTES) {
      await this.reject(name, `file name is ${nameBytes} bytes long, over the ${MAX_JOB_FILE_NAME_BYTES}-byte limit (its .state file must fit beside it)`);
      return undefined;
    }
    const read = await readJobFile(join(this.queue.dir('received'), name), payloadMaxBytes);
    if (read.kind === 'refused') {
      await this.reject(name, read.reason);
      return undefined;
    }
    const parsed = parseJobPayload(read.body, payloadMaxBytes);
    if (parsed.kind === 'rejected') {
      if (Date.now() - read.mtimeMs < FILE_SETTLE_MS) {
        logger.debug({ file: name, processor: this.processorId }, 'job file is still being written; reading it again later');
        await rename(join(this.queue.dir('received'), name), join(this.queue.dir('created'), name));
        this.queue.wakeAfter(FILE_SETTLE_MS);
        return undefined;
      }
      await this.reject(name, parsed.reason);
      return undefined;
    }
    return new FileJob(this.queue, name, parsed.payload);
  }

  /**
   * A file that is not a job: set it aside in `70-finished.d` with the reason
   * beside it. A name too long for its siblings is set aside under a shortened one.
   */
  private async reject(name: string, reason: string): Promise<void> {
    const setAside = Buffer.byteLength(name) > MAX_JOB_FILE_NAME_BYTES ? shortenedName(name) : name;
    this.queue.options.logger.error({ file: name, set_aside_as: setAside, processor: this.processorId, reason }, 'rejected job file');
    await rename(join(this.queue.dir('received'), name), join(this.queue.dir('finished'), setAside));
    await writeFile(join(this.queue.dir('finished'), sibling(setAside, '.error')), `${reason}\n`);
  }
}

/** `name` cut to fit MAX_JOB_FILE_NAME_BYTES, kept distinct from other cut names by a hash of the whole. */
function shortenedName(name: string): string {
  const tag = `-${createHash('sha256').update(name).digest('hex').slice(0, 12)}.json`;
  let stem = name.slice(0, -'.json'.length);
  while (Buffer.byteLength(stem) + tag.length > MAX_JOB_FILE_NAME_BYTES) stem = stem.slice(0, -1);
  return stem + tag;
}

type JobFileRead = { kind: 'read'; body: Buffer; mtimeMs: number } | { kind: 'refused'; reason: string };

/** Open errors that say the entry itself is unusable (rather than the worker short of resources). */
const UNUSABLE_ENTRY_CODES = new Set(['ELOOP', 'EACCES', 'EPERM', 'ENXIO']);

/**
 * Read a job file without trusting it: a symbolic link is not followed, and
 * anything but a regular file (a FIFO, a device, a directory) is refused
 * without being read, as is one over `maxBytes`. The checks are made on the
 * opened descriptor (O_NONBLOCK so that opening a FIFO can't wait for a
 * writer), so the entry can't be swapped between check and read.
 */
async function readJobFile(path: string, maxBytes: number): Promise<JobFileRead> {
  let handle: FileHandle;
  try {
    handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? '';
    if (!UNUSABLE_ENTRY_CODES.has(code)) throw err;
    return { kind: 'refused', reason: code === 'ELOOP' ? 'job file is a symbolic link, not a regular file' : `job file can't be opened: ${errorMessage(err)}` };
  }
  try {
    const info = await handle.stat();
    if (!info.isFile()) return { kind: 'refused', reason: `job file is ${describeFileType(info)}, not a regular file` };
    const tooLarge = { kind: 'refused', reason: `job file is over the ${maxBytes}-byte limit for a payload` } as const;
    if (info.size > maxBytes) return tooLarge;
    // The size may have changed since fstat: read one byte past the limit to know.
    const body = await readAtMost(handle, maxBytes + 1);
    return body.byteLength > maxBytes ? tooLarge : { kind: 'read', body, mtimeMs: info.mtimeMs };
  } finally {
    await handle.close();
  }
}

function describeFileType(info: Stats): string {
  if (info.isDirectory()) return 'a directory';
  if (info.isFIFO()) return 'a FIFO';
  if (info.isSocket()) return 'a socket';
  if (info.isCharacterDevice() || info.isBlockDevice()) return 'a device';
  return 'not a regular file';
}

/** The first `limit` bytes of `handle` (fewer at end of file), whatever its size says. */
async function readAtMost(handle: FileHandle, limit: number): Promise<Buffer> {
  const buffer = Buffer.allocUnsafe(limit);
  let filled = 0;
  while (filled < limit) {
    const { bytesRead } = await handle.read(buffer, filled, limit - filled, null);
    if (bytesRead === 0) break;
    filled += bytesRead;
  }
  return buffer.subarray(0, filled);
}

class FileJob implements QueuedJob {
  private stage: Stage = 'received';
  readonly log: FileLogSink;
  /** Files don't get lost like deliveries do. */
  readonly lost = new AbortController().signal;

  constructor(
    private readonly queue: FileJobQueue,
    private readonly name: string,
    readonly payload: JobPayload,
  ) {
    const logFile = join(queue.dir('log'), sibling(name, '.log'));
    this.log = new FileLogSink(logFile, queue.options.config.echoLogs ? queue.options.logger.child({ job_id: payload.jobId }) : undefined);
  }

  async received(): Promise<void> {
    // Claiming the file already moved it to 30-received.d.
  }

  async started(_instanceId: string): Promise<void> {
    await this.moveTo('started');
  }

  async finish(state: TerminalState): Promise<void> {
    await this.moveTo('finished');
    await writeFile(join(this.queue.dir('finished'), sibling(this.name, '.state')), state);
  }

  async requeue(): Promise<void> {
    await this.log.close();
    await this.moveTo('created');
  }

  async acknowledge(): Promise<void> {
    await this.log.close();
  }

  private async moveTo(stage: Stage): Promise<void> {
    await rename(join(this.queue.dir(this.stage), this.name), join(this.queue.dir(stage), this.name));
    this.stage = stage;
  }
}

/** Appends a job's log parts to its log file, and echoes whole lines to the worker log when asked. */
class FileLogSink implements LogSink {
  private file: Promise<FileHandle> | undefined;
  private writes: Promise<unknown> = Promise.resolve();
  private partialLine = '';

  constructor(
    private readonly path: string,
    private readonly echo: Logger | undefined,
  ) {}

  publish(part: LogPart): Promise<void> {
    // Part 0 starts a run: a requeued job's new run starts a fresh log.
    if (part.number === 0 || !this.file) {
      const previous = this.file;
      this.file = (async () => {
        await (await previous)?.close();
        return open(this.path, part.number === 0 ? 'w' : 'a');
      })();
    }
    const file = this.file;
    const write = this.writes.then(async () => (await file).write(part.content));
    this.writes = write;
    this.echoLines(part);
    return write.then(() => undefined);
  }

  flushed(): Promise<void> {
    return this.writes.then(() => undefined);
  }

  async close(): Promise<void> {
    await this.writes;
    const file = this.file;
    this.file = undefined;
    await (await file)?.close();
  }

  private echoLines(part: LogPart): void {
    if (!this.echo) return;
    const lines = (this.partialLine + part.content).split('\n');
    this.partialLine = part.final ? '' : (lines.pop() ?? '');
    for (const line of lines) {
      const text = line.replace(/\r$/, '').replace(/^.*\r(?!$)/, '');
      if (text !== '' || !part.final) this.echo.info({ stream: 'job-log' }, text);
    }
  }
}
