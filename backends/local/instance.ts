import { spawn } from 'node:child_process';
import { access, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  StaleVmError,
  UploadError,
  killProcessGroup,
  killProcessTree,
  outputFlushed,
  type Instance,
  type RunOptions,
  type RunResult,
  type UploadOptions,
} from '../../src/backend/kit.js';

const SCRIPT_NAME = 'build.sh';

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
      // as a terminal would; detached makes the script a process group leader
      // so the whole tree can be killed.
      const child = spawn('bash', ['-c', `exec bash ./${SCRIPT_NAME} 2>&1`], {
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
      const settle = (): void => {
        if (openStreams > 0 || !exit) return;
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
        settle();
      });
    });
  }

  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    this.kill();
    await rm(this.dir, { recursive: true, force: true });
  }

  private kill(): void {
    if (this.pid === undefined) return;
    if (this.exited) killProcessGroup(this.pid);
    else killProcessTree(this.pid);
  }
}
