import { spawn } from 'node:child_process';
import { access, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  StaleVmError,
  UploadError,
  outputFlushed,
  type Instance,
  type RunOptions,
  type RunResult,
  type UploadOptions,
} from '../../src/backend/kit.js';
import type { JobContainer } from './containment.js';

const SCRIPT_NAME = 'build.sh';

/**
 * How long the output pipes may stay open after the script exited and its
 * processes were killed. Contained processes are dead by then and their pipes
 * close at once; this bounds only a pipe held from outside the job (a
 * descriptor passed away, or an escapee under the `session` fallback), and
 * outlasts reading the 64 KiB a pipe buffers.
 */
export const OUTPUT_AFTER_EXIT_MS = 5000;

/** How many leftover paths a failed destroy names. */
const LEFTOVERS_NAMED = 5;

/**
 * The environment a local job sees: enough to run a shell, and nothing of
 * the worker's own (which holds broker passwords and cloud credentials).
 */
function jobEnvironment(home: string): NodeJS.ProcessEnv {
  return {
    PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    HOME: home,
    LANG: 'C.UTF-8',
    TERM: 'xterm',
  };
}

export class LocalInstance implements Instance {
  readonly imageName = 'local';
  private pid: number | undefined;
  private exited = false;
  private destroyed = false;

  constructor(
    private readonly dir: string,
    private readonly container: JobContainer,
    readonly startupMs: number,
  ) {}

  get id(): string {
    return this.dir;
  }

  async upload(script: Buffer, { signal }: UploadOptions): Promise<void> {
    signal.throwIfAborted();
    const path = join(this.dir, SCRIPT_NAME);
    const exists = await access(path).then(
      () => true,
      () => false,
    );
    if (exists) throw new StaleVmError(`${path} already exists`);
    try {
      await writeFile(path, script, { mode: 0o755 });
    } catch (err) {
      throw new UploadError(`could not write ${path}`, { cause: err });
    }
  }

  run({ output, signal }: RunOptions): Promise<RunResult> {
    return new Promise((resolve, reject) => {
      // `exec ... 2>&1` gives the log one stream in the order it was written,
      // as a terminal would; detached makes the script a session and process
      // group leader, so that it has no terminal and its group can be killed.
      const [command, ...args] = this.container.command(['bash', '-c', `exec bash ./${SCRIPT_NAME} 2>&1`]) as [string, ...string[]];
      const child = spawn(command, args, {
        cwd: this.dir,
        env: jobEnvironment(this.dir),
        detached: true,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      this.pid = child.pid;
      const onAbort = (): void => this.kill();
      signal.addEventListener('abort', onAbort, { once: true });
      if (signal.aborted) onAbort();

      let exit: RunResult | undefined;
      let openStreams = 2;
      let cutOff: NodeJS.Timeout | undefined;
      const settle = (): void => {
        if (openStreams > 0 || !exit) return;
        clearTimeout(cutOff);
        signal.removeEventListener('abort', onAbort);
        const result = exit;
        void outputFlushed(output).then(() => resolve(result));
      };
      for (const stream of [child.stdout, child.stderr]) {
        stream.pipe(output, { end: false });
        stream.once('close', () => {
          openStreams--;
          settle();
        });
      }
      child.once('error', (err) => {
        signal.removeEventListener('abort', onAbort);
        reject(err);
      });
      child.once('exit', (code, killedBy) => {
        exit = killedBy ? { exitCode: null, signal: killedBy.replace(/^SIG/, '') } : { exitCode: code };
        this.exited = true;
        // Background processes the script left behind would hold the output
        // pipe open for ever; on a VM they would die with it, so here too.
        this.kill();
        // Nor may a pipe held by anything else keep a finished job open.
        cutOff = setTimeout(() => {
          child.stdout.destroy();
          child.stderr.destroy();
        }, OUTPUT_AFTER_EXIT_MS);
        settle();
      });
    });
  }

  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.kill();
    await this.container.release();
    try {
      await rm(this.dir, { recursive: true, force: true });
    } catch (err) {
      throw new Error(`could not remove the job directory ${this.dir}: ${await leftovers(this.dir)} remain`, { cause: err });
    }
    this.destroyed = true;
  }

  private kill(): void {
    if (this.pid !== undefined) this.container.kill(this.pid, this.exited);
  }
}

/** The first few paths left under `dir`, for an operator to look at. */
async function leftovers(dir: string): Promise<string> {
  const left = await readdir(dir, { recursive: true });
  const named = left.slice(0, LEFTOVERS_NAMED).map((path) => join(dir, path));
  return left.length > LEFTOVERS_NAMED ? `${named.join(', ')} and ${left.length - LEFTOVERS_NAMED} more` : named.join(', ');
}
