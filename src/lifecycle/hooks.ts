/**
 * `TRAVIS_WORKER_START_HOOK` / `_STOP_HOOK`: a command run before the worker
 * takes jobs and another just before it exits (e.g. to register the host
 * with a load balancer or tell an autoscaling group the instance may go).
 * As in travis, the text is split on spaces and run without a shell, and a
 * failing hook is logged, never fatal: a broken hook must not keep a worker
 * from draining or starting.
 */
import { execFile } from 'node:child_process';
import { errorMessage } from '../errors.js';
import type { Logger } from '../logger.js';

/** Longest a hook may run before it is killed: long enough for an API call with retries, short enough not to eat the stop budget. */
export const HOOK_TIMEOUT_MS = 60_000;
/** Output kept for the log line of a failed hook. */
const HOOK_OUTPUT_MAX_BYTES = 64 * 1024;

export interface HookResult {
  ok: boolean;
  /** stdout and stderr, for the log (at most 64 KiB of each). */
  output: string;
}

/** Run `command` (split on whitespace, no shell); resolves whatever happens. */
export function runHook(kind: 'start' | 'stop', command: string, logger: Logger, signal?: AbortSignal): Promise<HookResult> {
  const [file, ...args] = command.trim().split(/\s+/);
  const hookLogger = logger.child({ [`${kind}_hook`]: command });
  if (!file) return Promise.resolve({ ok: true, output: '' });
  hookLogger.info(`running ${kind} hook`);
  return new Promise((resolve) => {
    execFile(
      file,
      args,
      { timeout: HOOK_TIMEOUT_MS, maxBuffer: HOOK_OUTPUT_MAX_BYTES, killSignal: 'SIGKILL', ...(signal ? { signal } : {}) },
      (err, stdout, stderr) => {
        const output = `${stdout}${stderr}`;
        if (err) {
          hookLogger.error({ err: errorMessage(err), output }, `${kind} hook failed`);
          resolve({ ok: false, output });
        } else {
          resolve({ ok: true, output });
        }
      },
    );
  });
}
