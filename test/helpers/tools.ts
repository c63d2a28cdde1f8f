/**
 * Runs the real clients of what the worker serves (Prometheus' promtool,
 * `go tool pprof`) to their exit. A tool that is not installed fails the
 * test, saying what installs it: scripts/test-prerequisites.sh.
 */
import { execFile } from 'node:child_process';

export interface ToolRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** `command args` to its exit, `input` on its stdin; rejects only when it cannot be started. */
export function runTool(
  command: string,
  args: string[],
  options: { input?: string; env?: NodeJS.ProcessEnv; signal?: AbortSignal } = {},
): Promise<ToolRun> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      command,
      args,
      { encoding: 'utf8', maxBuffer: 16 * 1024 * 1024, env: options.env ?? process.env, signal: options.signal ?? AbortSignal.timeout(120_000) },
      (err, stdout, stderr) => {
        if (err !== null && typeof err.code !== 'number') {
          const missing = err.code === 'ENOENT' ? `${command} is not installed (scripts/test-prerequisites.sh installs it)` : err.message;
          reject(new Error(missing, { cause: err }));
          return;
        }
        resolve({ code: err === null ? 0 : (err.code as number), stdout, stderr });
      },
    );
    child.stdin?.end(options.input ?? '');
  });
}
