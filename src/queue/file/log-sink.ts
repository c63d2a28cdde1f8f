/** A file queue job's log: one file per job, rewritten by each run. */
import { open, type FileHandle } from 'node:fs/promises';
import type { Logger } from '../../logger.js';
import type { LogPart, LogSink } from '../contract.js';

/** Appends a job's log parts to its log file, and echoes whole lines to the worker log when asked. */
export class FileLogSink implements LogSink {
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
