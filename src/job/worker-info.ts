/**
 * What the job log says about the worker and the instance, in travis-ci/worker's
 * words and formats (step_write_worker_info.go, step_start_instance.go,
 * backend/text_progresser.go): users and tools read these lines.
 */
import { formatGoDuration } from '../config/formats.js';
import { fold, foldEnd, foldStart } from '../job-log/writer.js';

export interface WorkerInfo {
  hostname: string;
  /** The version, then the revision (travis: its version and its revision URL). */
  version: string;
  revision: string;
  instanceId: string;
  imageName: string;
  /** How the job came in (`amqp`, `file`): travis' job name. */
  via: string;
  startupMs: number;
}

/** The `worker_info` fold: travis joins its lines with `\n` and writes the startup as a Go duration (`42.17s`). */
export function workerInfoFold(info: WorkerInfo): string {
  return fold(
    'worker_info',
    [
      '\x1b[33;1mWorker information\x1b[0m',
      `hostname: ${info.hostname}`,
      `version: ${info.version} ${info.revision}`,
      `instance: ${info.instanceId} ${info.imageName} (via ${info.via})`,
      `startup: ${formatGoDuration(Math.round(info.startupMs))}`,
    ].join('\n'),
  );
}

/** The fold around the backend's progress while the instance starts (`TRAVIS_WORKER_PROGRESS_TYPE=text`). */
export const START_INSTANCE_FOLD_START = `${foldStart('step_start_instance')}\x1b[33;1mStarting instance\x1b[0m\r\n`;
export const START_INSTANCE_FOLD_END = foldEnd('step_start_instance');

/** One progress line as travis' text progresser writes a neutral entry. */
export function progressLine(message: string): string {
  return `• ${message}\r\n`;
}
