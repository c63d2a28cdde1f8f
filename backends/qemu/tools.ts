/**
 * Running the host tools a VM is made with (qemu-img, mkfs.vfat, mcopy):
 * each to its end, its error output kept (bounded) for the error that
 * names the command when it fails.
 */
import { execFile } from 'node:child_process';

/**
 * Output held from one tool run: these tools print a line or two at most
 * (qemu-img runs with -q); past this the run fails instead of the worker
 * buffering a flood.
 */
const OUTPUT_LIMIT_BYTES = 64 * 1024;
/** The end of its error output that a failure's message quotes. */
const STDERR_QUOTED_BYTES = 4 * 1024;

/** Run `command` with `args`; rejects with an `Error` naming the command and saying what it wrote to stderr. */
export function runTool(command: string, args: readonly string[], signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(command, args, { signal, maxBuffer: OUTPUT_LIMIT_BYTES }, (err, _stdout, stderr) => {
      if (err === null) return resolve();
      if (signal.aborted) return reject(signal.reason as Error);
      const said = String(stderr).trim().slice(-STDERR_QUOTED_BYTES);
      reject(new Error(`${command} failed: ${said || err.message}`, { cause: err }));
    });
  });
}
