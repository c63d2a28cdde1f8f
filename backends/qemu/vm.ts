/**
 * One QEMU process: spawned as a child of the worker, driven over QMP, and
 * watched. Its exit is noticed at once (the child's `exit`), whatever caused
 * it: a crash, a guest panic or reboot (`-no-reboot`), a power-off from
 * inside, a kill. Shutting it down goes from gentle to certain: ask the
 * guest to power off (ACPI, `system_powerdown`), then tell QEMU to quit,
 * then kill it.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { once } from 'node:events';
import { abortableSleep, raceAbort, type Logger } from '../../src/backend/kit.js';
import { QmpClient, type QmpEvent } from './qmp.js';

/** QEMU's error output kept for the message of a failed start or a crash: its last words, never a flood. */
const STDERR_TAIL_BYTES = 4 * 1024;
/** After `quit`, QEMU stops within a second; past this it is killed. */
const QUIT_TIMEOUT_MS = 10_000;
/** QMP events kept to say why a VM died (a crash leaves a few at most). */
const EVENTS_KEPT = 8;

/** How a QEMU process ended. */
export interface VmExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** The last QMP events before it ended, e.g. `GUEST_PANICKED`, `SHUTDOWN`. */
  events: string[];
  /** The end of what QEMU wrote to stderr. */
  stderr: string;
}

/** A VM's end in words, for errors and logs. */
export function describeExit(exit: VmExit): string {
  const how = exit.signal !== null ? `killed by ${exit.signal}` : `exited with status ${exit.code}`;
  const events = exit.events.length > 0 ? ` after ${exit.events.join(', ')}` : '';
  const said = exit.stderr.trim() === '' ? '' : `: ${exit.stderr.trim().split('\n').slice(-3).join(' / ')}`;
  return `QEMU ${how}${events}${said}`;
}

export class QemuVm {
  readonly pid: number;
  /** Settles when the process has ended, for whatever reason. */
  readonly exited: Promise<VmExit>;
  /** Aborts (with the `VmExit`) when the process ends without `shutdown` having been asked. */
  readonly died: AbortSignal;
  readonly #child: ChildProcessWithoutNullStreams;
  readonly #qmp: QmpClient;
  readonly #events: string[] = [];
  #stderr = '';
  #ended: VmExit | undefined;
  #shuttingDown = false;

  private constructor(child: ChildProcessWithoutNullStreams, logger: Logger) {
    this.#child = child;
    this.pid = child.pid as number;
    const died = new AbortController();
    this.died = died.signal;
    child.stderr.on('data', (chunk: Buffer) => {
      this.#stderr = (this.#stderr + chunk.toString('utf8')).slice(-STDERR_TAIL_BYTES);
    });
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.#ended = { code, signal, events: [...this.#events], stderr: this.#stderr };
        if (!this.#shuttingDown) died.abort(this.#ended);
        resolve(this.#ended);
      });
    });
    this.#qmp = new QmpClient(child.stdout, child.stdin, (event: QmpEvent) => {
      this.#events.push(event.event);
      if (this.#events.length > EVENTS_KEPT) this.#events.shift();
      logger.debug({ pid: this.pid, event: event.event, data: event.data }, 'qemu event');
    });
  }

  /**
   * Spawn `command` and wait until QEMU's monitor answers. Rejects with
   * `signal.reason` (after killing it) when `signal` aborts, and with an
   * `Error` describing its exit when QEMU ends first (a bad image, a port
   * taken, no KVM).
   */
  static async launch(command: readonly string[], logger: Logger, signal: AbortSignal): Promise<QemuVm> {
    const [file, ...args] = command;
    const child = spawn(file as string, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const spawned = once(child, 'spawn').then(
      () => undefined,
      (err: unknown) => err,
    );
    const failedToSpawn = await spawned;
    if (failedToSpawn !== undefined) throw new Error(`could not run ${file as string}: ${(failedToSpawn as Error).message}`);
    const vm = new QemuVm(child, logger);
    try {
      await raceAbort(
        Promise.race([
          vm.#qmp.connect(),
          vm.exited.then((exit) => {
            throw new Error(describeExit(exit));
          }),
        ]),
        signal,
      );
      return vm;
    } catch (err) {
      await vm.kill();
      if (signal.aborted) throw signal.reason;
      if (vm.#ended !== undefined) throw new Error(describeExit(vm.#ended), { cause: err });
      throw err;
    }
  }

  /** What QEMU wrote to stderr so far (its tail). */
  get stderr(): string {
    return this.#stderr;
  }

  /** Whether KVM accelerates this VM (QMP `query-kvm`). */
  async kvmEnabled(): Promise<boolean> {
    const answer = (await this.#qmp.execute('query-kvm')) as { enabled?: boolean };
    return answer.enabled === true;
  }

  /**
   * Power off gently, then surely: `system_powerdown` and up to `graceMs` for
   * the guest to go, then QMP `quit` and up to `QUIT_TIMEOUT_MS`, then SIGKILL.
   * Resolves once the process has ended. Never throws.
   */
  async shutdown(graceMs: number): Promise<VmExit> {
    this.#shuttingDown = true;
    if (this.#ended !== undefined) return this.#ended;
    if (graceMs > 0 && (await this.#ask('system_powerdown')) && (await this.endsWithin(graceMs))) return this.exited;
    if ((await this.#ask('quit')) && (await this.endsWithin(QUIT_TIMEOUT_MS))) return this.exited;
    return this.kill();
  }

  /** SIGKILL, at once; resolves once the process has ended. */
  async kill(): Promise<VmExit> {
    this.#shuttingDown = true;
    if (this.#ended === undefined) this.#child.kill('SIGKILL');
    return this.exited;
  }

  async #ask(command: string): Promise<boolean> {
    try {
      await this.#qmp.execute(command);
      return true;
    } catch {
      return false; // QEMU is going already, or its monitor is stuck: the next step decides.
    }
  }

  /** Whether the process has ended within `ms` (or had already). */
  async endsWithin(ms: number): Promise<boolean> {
    const done = new AbortController();
    try {
      await Promise.race([this.exited, abortableSleep(ms, done.signal).catch(() => {})]);
    } finally {
      done.abort();
    }
    return this.#ended !== undefined;
  }
}
