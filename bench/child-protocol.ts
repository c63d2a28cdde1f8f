/** The messages between the bench and its child processes (bench/child.ts). */

export type ChildRequest =
  /**
   * Start a worker with these `TRAVIS_WORKER_*` variables, logging (info
   * level) to `logPath`; `sequentialStart`: fetch each script before
   * starting its instance (the same-run baseline of the job-start scenario).
   */
  | { type: 'start-worker'; env: Record<string, string>; logPath: string; sequentialStart: boolean }
  /** Echo every message of queue `from` to queue `to`. */
  | { type: 'start-echo'; uri: string; from: string; to: string }
  | { type: 'usage' }
  /** Stop (the worker requeues running jobs), answer `stopped`, and exit. */
  | { type: 'stop' };

export type ChildReply =
  | { type: 'ready' }
  /** A job settled: `state` is its terminal state, or `requeued`/`abandoned`; `atUs` is µs since the epoch. */
  | { type: 'job-done'; jobId: number; state: string; atUs: number }
  /** CPU time in µs since the process started (before the collection); memory in bytes, after a collection. */
  | { type: 'usage'; userUs: number; systemUs: number; rssBytes: number; heapUsedBytes: number }
  | { type: 'stopped' }
  | { type: 'error'; message: string };
