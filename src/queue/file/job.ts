/** One job of a file queue: its states are the stage its file is in, and its outcome a `.state` file beside it. */
import { rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { JobPayload } from '../../job/payload.js';
import type { QueuedJob, TerminalState } from '../contract.js';
import { sibling, type Stage } from './layout.js';
import { FileLogSink } from './log-sink.js';
import type { FileJobQueue } from './queue.js';

export class FileJob implements QueuedJob {
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
    // Written aside and renamed into place, so whoever watches for the
    // `.state` file never reads it half written (an empty state).
    const finished = this.queue.dir('finished');
    await writeFile(join(finished, sibling(this.name, '.state.tmp')), state);
    await rename(join(finished, sibling(this.name, '.state.tmp')), join(finished, sibling(this.name, '.state')));
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
