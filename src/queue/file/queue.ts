/**
 * The `file` job queue, the embedded default (docs/protocol.md, "The file queue"):
 * `<base>/<queue>/{10-created.d,30-received.d,50-started.d,70-finished.d}`,
 * a job being a `<id>.json` payload moved from stage to stage. The log of a
 * job is written to `<base>/<queue>/log/<id>.log` (as travis does) and its
 * terminal state to `70-finished.d/<id>.state`.
 *
 * Several processors (and several workers) can share the directories: a job
 * is claimed by renaming it out of `10-created.d`, which only one can do.
 *
 * This module keeps the directories and wakes waiting sources; source.ts
 * claims and reads job files (read-job-file.ts), job.ts moves a job through
 * the stages, log-sink.ts writes its log, layout.ts names the directories
 * and files.
 */
import { watch, type FSWatcher } from 'node:fs';
import { mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { FileQueueConfig } from '../../config/types.js';
import { errorMessage } from '../../errors.js';
import type { Logger } from '../../logger.js';
import { abortableSleep } from '../../util/abort.js';
import type { CancelCommand, JobQueue, JobSource } from '../contract.js';
import { STAGES, isJobFileName, type Stage } from './layout.js';
import { FileJobSource } from './source.js';

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

  /** Job files waiting in `10-created.d`. */
  async readyJobs(): Promise<number> {
    return (await readdir(this.dir('created'))).filter(isJobFileName).length;
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
