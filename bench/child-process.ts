/**
 * The bench's handle on a child process (bench/child.ts): start it as a
 * worker or an echo, read its CPU and memory, follow its jobs, stop it.
 * Every child is registered with the run's resources, so none outlives it.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Resources } from './resources.js';
import type { ChildReply, ChildRequest } from './child-protocol.js';

const CHILD_SCRIPT = fileURLToPath(new URL('./child.js', import.meta.url));
/** A polite stop waits for running jobs to be requeued; after this the child is killed. */
const STOP_TIMEOUT_MS = 30_000;

/** A job the child's worker settled, as it reported it. */
export interface JobDoneReport {
  jobId: number;
  state: string;
  atUs: number;
}

/** Memory of a process as the kernel counts it (/proc/<pid>/status), in bytes. */
export interface KernelMemory {
  /** Resident set now. */
  rssBytes: number;
  /** Peak resident set since the process started. */
  peakRssBytes: number;
}

export function kernelMemory(pid: number): KernelMemory {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (field: string): number => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? Number.NaN) * 1024;
  return { rssBytes: kib('VmRSS'), peakRssBytes: kib('VmHWM') };
}

export class BenchChild {
  readonly #child: ChildProcess;
  readonly #replies: ChildReply[] = [];
  #wake: (() => void) | undefined;
  readonly #jobListeners = new Set<(done: JobDoneReport) => void>();
  readonly #exited: Promise<void>;
  #exitCode: number | null | undefined;
  readonly release: () => Promise<void>;

  /** `profileDir`: write a V8 CPU profile (`.cpuprofile`) of the whole child there when it exits. */
  constructor(resources: Resources, name: string, profileDir?: string) {
    const profile = profileDir === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${profileDir}`];
    this.#child = fork(CHILD_SCRIPT, [], { execArgv: ['--expose-gc', ...profile], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.#exited = once(this.#child, 'exit').then(([code]) => {
      this.#exitCode = code as number | null;
      this.#wake?.();
    });
    this.#child.on('message', (reply: ChildReply) => {
      if (reply.type === 'job-done') {
        for (const listener of this.#jobListeners) listener(reply);
        return;
      }
      this.#replies.push(reply);
      this.#wake?.();
    });
    this.release = resources.add(`${name} (pid ${this.#child.pid})`, () => this.stop());
  }

  get pid(): number {
    return this.#child.pid as number;
  }

  /** Start a worker with `env` (the `TRAVIS_WORKER_*` variables), logging to `logPath`; `sequentialStart` as `StartWorkerOptions` says. */
  async startWorker(env: Record<string, string>, logPath: string, signal: AbortSignal, sequentialStart = false): Promise<void> {
    await this.#request({ type: 'start-worker', env, logPath, sequentialStart }, 'ready', signal);
  }

  async startEcho(uri: string, from: string, to: string, signal: AbortSignal): Promise<void> {
    await this.#request({ type: 'start-echo', uri, from, to }, 'ready', signal);
  }

  /** CPU time (µs) and V8's view of memory, after a garbage collection. */
  async usage(signal: AbortSignal): Promise<Extract<ChildReply, { type: 'usage' }>> {
    return this.#request({ type: 'usage' }, 'usage', signal);
  }

  memory(): KernelMemory {
    return kernelMemory(this.pid);
  }

  /** Every job the worker settles from now on. */
  onJobDone(listener: (done: JobDoneReport) => void): () => void {
    this.#jobListeners.add(listener);
    return () => this.#jobListeners.delete(listener);
  }

  /** Stop politely (running jobs are requeued), or kill after a while. Idempotent. */
  async stop(): Promise<void> {
    if (this.#exitCode === undefined && this.#child.connected) {
      try {
        await this.#request({ type: 'stop' }, 'stopped', AbortSignal.timeout(STOP_TIMEOUT_MS));
      } catch {
        this.#child.kill('SIGKILL');
      }
    } else if (this.#exitCode === undefined) {
      this.#child.kill('SIGKILL');
    }
    await this.#exited;
  }

  async #request<T extends ChildReply['type']>(request: ChildRequest, expected: T, signal: AbortSignal): Promise<Extract<ChildReply, { type: T }>> {
    this.#child.send(request);
    for (;;) {
      signal.throwIfAborted();
      const reply = this.#replies.shift();
      if (reply?.type === expected) return reply as Extract<ChildReply, { type: T }>;
      if (reply?.type === 'error') throw new Error(`bench child: ${reply.message}`);
      if (reply !== undefined) continue;
      if (this.#exitCode !== undefined) throw new Error(`bench child exited (${this.#exitCode}) before answering ${request.type}`);
      await new Promise<void>((resolve) => {
        const done = (): void => {
          this.#wake = undefined;
          signal.removeEventListener('abort', done);
          resolve();
        };
        this.#wake = done;
        signal.addEventListener('abort', done, { once: true });
      });
    }
  }
}
