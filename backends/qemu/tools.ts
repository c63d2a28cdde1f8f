/**
 * Running the host tools a VM is made with (qemu-img, mkfs.vfat, mcopy):
 * each to its end, its error output kept (bounded) for the error that
 * names the command when it fails.
 */
import { execFile } from 'node:child_process';

/** Error output kept from a failing tool: enough for its message, never a whole flood. */
const STDERR_LIMIT_BYTES = 4 * 1024;

/** Run `command` with `args`; rejects with an `Error` naming the command and saying what it wrote to stderr. */
export function runTool(command: string, args: readonly string[], signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(command, args, { signal, maxBuffer: STDERR_LIMIT_BYTES * 16 }, (err, _stdout, stderr) => {
      if (err === null) return resolve();
      if (signal.aborted) return reject(signal.reason as Error);
      const said = String(stderr).trim().slice(-STDERR_LIMIT_BYTES);
      reject(new Error(`${command} failed: ${said || err.message}`, { cause: err }));
    });
  });
}
