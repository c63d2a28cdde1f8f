/**
 * Native mode: the script goes in through the archive endpoint and runs
 * through exec, with no SSH at all. Output comes from the exec's attached
 * stream (demultiplexed when there is no terminal) into the job's output
 * with backpressure; the exit code from exec inspect once the stream ends.
 */
import type { Readable, Writable } from 'node:stream';
import {
  ConnectionLostError,
  StaleVmError,
  UploadError,
  errorMessage,
  abortableSleep,
  outputFlushed,
  type RunResult,
  type Logger,
} from '../../src/backend/kit.js';
import { StreamDemultiplexer } from './demux.js';
import type { DockerEngine } from './engine.js';
import { tarFile } from './tar.js';

/** Where travis' native mode puts the script (EXEC_CMD's default runs it from there). */
export const NATIVE_SCRIPT_PATH = '/home/travis/build.sh';
/** The user native scripts run as, as in travis' images. */
export const NATIVE_USER = 'travis';
/**
 * Stopping an aborted script: SIGKILL to every process of the container
 * the caller may signal except itself and PID 1 (kill(2) with pid -1). The
 * container runs one job, so that is exactly the script and its children,
 * wherever they put themselves (new sessions, process groups).
 */
const KILL_ALL_COMMAND = ['/bin/sh', '-c', 'kill -KILL -1'];
/** Bound on the kill exec and on inspections after the output ended: the job must settle promptly. */
const HOUSEKEEPING_TIMEOUT_MS = 10_000;

export interface NativeRunOptions {
  engine: DockerEngine;
  containerId: string;
  execCmd: string[];
  tty: boolean;
  env: string[];
  inspectIntervalMs: number;
  output: Writable;
  /** The job's signal combined with the container watch: aborting stops the script. */
  signal: AbortSignal;
  logger: Logger;
}

function lost(message: string, cause?: unknown): ConnectionLostError {
  return new ConnectionLostError(message, {
    cause,
    userMessage: 'The connection to the build container was lost; the job will be run again.',
  });
}

/** Put the script into the container; `StaleVmError` if one is there already. */
export async function uploadNative(engine: DockerEngine, containerId: string, script: Buffer, signal: AbortSignal): Promise<void> {
  try {
    if (await engine.pathExists(containerId, NATIVE_SCRIPT_PATH, signal)) {
      throw new StaleVmError(`container ${containerId.slice(0, 12)} already has a build script`);
    }
    await engine.putArchive(containerId, '/', tarFile({ name: NATIVE_SCRIPT_PATH, data: script, mode: 0o755 }), signal);
  } catch (err) {
    if (signal.aborted) throw signal.reason;
    if (err instanceof StaleVmError) throw err;
    throw new UploadError(`could not copy the script into container ${containerId.slice(0, 12)}: ${errorMessage(err)}`, { cause: err });
  }
}

/**
 * Run the script through exec and resolve with its exit code once every
 * byte of its output has been processed by `output`. On abort, kills the
 * script and rejects with `signal.reason`; `ConnectionLostError` when the
 * stream to the engine breaks.
 */
export async function runNative(options: NativeRunOptions): Promise<RunResult> {
  const { engine, containerId, signal, output } = options;
  let execId: string;
  let stream: Readable;
  try {
    execId = await engine.createExec(
      containerId,
      { Cmd: options.execCmd, User: NATIVE_USER, Tty: options.tty, ...(options.env.length > 0 ? { Env: options.env } : {}) },
      signal,
    );
    stream = await engine.startExec(execId, options.tty, signal);
  } catch (err) {
    if (signal.aborted) throw signal.reason;
    throw lost(`could not start the script in container ${containerId.slice(0, 12)}: ${errorMessage(err)}`, err);
  }
  try {
    await pump(options.tty ? stream : stream.pipe(new StreamDemultiplexer()), stream, output, signal);
  } catch (err) {
    if (signal.aborted) {
      await killScript(options);
      throw signal.reason;
    }
    throw err;
  }
  return { exitCode: await exitCode(engine, execId, options.inspectIntervalMs, signal) };
}

/**
 * Copy `source` into `output` (never ending it) until the source ends, with
 * backpressure (pipe pauses the source while `output` is full), then wait
 * for `output` to process what it was given. Rejects on abort, on a broken
 * stream, or when `output` fails.
 */
function pump(source: Readable, raw: Readable, output: Writable, signal: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let settled = false;
    const finish = (outcome: () => void): void => {
      if (settled) return;
      settled = true;
      signal.removeEventListener('abort', onAbort);
      output.off('error', onError);
      source.unpipe(output);
      outcome();
    };
    const onAbort = (): void => {
      raw.destroy();
      finish(() => reject(signal.reason));
    };
    const onError = (err: Error): void => {
      raw.destroy();
      finish(() => reject(err === signal.reason ? err : lost(`the script's output stream broke: ${err.message}`, err)));
    };
    if (signal.aborted) return onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    output.on('error', onError);
    source.on('error', onError);
    if (source !== raw) raw.on('error', onError);
    source.on('end', () => {
      void outputFlushed(output).then(() => finish(resolve));
    });
    source.pipe(output, { end: false });
  });
}

/** The exec's exit code, inspecting until the engine has noticed the exit (the stream may end a moment before). */
async function exitCode(engine: DockerEngine, execId: string, intervalMs: number, signal: AbortSignal): Promise<number | null> {
  const bounded = AbortSignal.any([signal, AbortSignal.timeout(HOUSEKEEPING_TIMEOUT_MS)]);
  try {
    for (;;) {
      const info = await engine.inspectExec(execId, bounded);
      if (!info.Running) return info.ExitCode;
      await abortableSleep(intervalMs, bounded);
    }
  } catch (err) {
    if (signal.aborted) throw signal.reason;
    throw lost(`could not learn the script's exit code: ${errorMessage(err)}`, err);
  }
}

/** Best effort: the container is destroyed next anyway, this only makes the stop prompt. */
async function killScript(options: NativeRunOptions): Promise<void> {
  const { engine, containerId, logger } = options;
  const signal = AbortSignal.timeout(HOUSEKEEPING_TIMEOUT_MS);
  try {
    const execId = await engine.createExec(containerId, { Cmd: KILL_ALL_COMMAND, User: 'root', Tty: false }, signal);
    const stream = await engine.startExec(execId, false, signal);
    await stream.toArray().catch(() => undefined);
  } catch (err) {
    logger.debug({ container: containerId, err: errorMessage(err) }, 'could not kill the aborted script (the container goes next)');
  }
}
