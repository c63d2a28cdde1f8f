/**
 * The jobs one processor takes from a file queue: it claims the oldest-named
 * job file by renaming it out of `10-created.d`, which only one processor
 * (of any worker sharing the directories) can do, then reads it; a file
 * that is not a job is set aside with its reason.
 */
import { rename, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { errorMessage } from '../../errors.js';
import { parseJobPayload } from '../../job/payload.js';
import type { JobSource, QueuedJob } from '../contract.js';
import { FileJob } from './job.js';
import { MAX_JOB_FILE_NAME_BYTES, STAGES, isJobFileName, shortenedName, sibling } from './layout.js';
import type { FileJobQueue } from './queue.js';
import { readJobFile } from './read-job-file.js';

/**
 * A writer that does not write atomically (a temporary name, then a rename
 * into `10-created.d`) may be caught mid-write: a payload that doesn't parse
 * and was modified this recently is put back and read again later instead
 * of being rejected. Two seconds outlast any write of a payload that fits
 * the size limit.
 */
export const FILE_SETTLE_MS = 2000;

export class FileJobSource implements JobSource {
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
      .filter(isJobFileName)
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
