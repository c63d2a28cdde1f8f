/**
 * Running a command under a terminal over an open connection and streaming
 * its output, with backpressure: when the output stream is full the channel
 * is paused, ssh2 stops widening the SSH window, and the remote side blocks
 * in write(2). Memory held here is bounded by the channel window (2 MiB).
 */
import type { Readable, Writable } from 'node:stream';
import type { ClientChannel, PseudoTtyOptions } from 'ssh2';
import type { RunResult } from '../backend/contract.js';
import { ConnectionLostError, errorMessage } from '../errors.js';
import { outputFlushed } from '../util/streams.js';
import type { SshConnection } from './connection.js';

/**
 * Bytes of a channel's output ssh2 buffers before it stops widening the SSH
 * window. ssh2 sets its channels' buffer to the whole window (2 MiB), so a
 * script faster than the log pipeline had up to 4 MiB (buffer + window)
 * between its print and the log writer: at 10 MB/s, 400 ms of delay on
 * every line (`npm run bench`, logs). 64 KiB is a few SSH packets (32 KiB each) and as
 * much as the log writer itself holds (LOG_HIGH_WATER_MARK_BYTES).
 */
export const CHANNEL_BUFFER_BYTES = 64 * 1024;

/** The terminal travis-ci/worker gives build scripts (`xterm`, 40 rows by 80 columns). */
export const BUILD_PTY: PseudoTtyOptions = { term: 'xterm', rows: 40, cols: 80 };

export interface RunCommandOptions {
  /** Receives stdout and stderr; never ended here (the caller owns it). */
  output: Writable;
  /** Aborting kills the command (SIGKILL to its process group), closes the connection and rejects with the reason. */
  signal: AbortSignal;
  /** Terminal to allocate, `BUILD_PTY` by default; `false` for none (housekeeping commands). */
  pty?: PseudoTtyOptions | false;
}

/** ssh2 names signals `SIGKILL`; the contract (and RFC 4254) says `KILL`. */
function signalName(name: string): string {
  return name.startsWith('SIG') ? name.slice(3) : name;
}

function lost(message: string, cause?: unknown): ConnectionLostError {
  return new ConnectionLostError(message, {
    cause,
    userMessage: 'The connection to the build machine was lost; the job will be run again.',
  });
}

/**
 * Lower a channel stream's buffer to CHANNEL_BUFFER_BYTES. ssh2 has no
 * option for it; `push` reads the high-water mark from the stream's state
 * on every chunk, so changing it there takes effect at once. Left alone
 * if the stream keeps its state elsewhere (a later Node): only the delay
 * grows back.
 */
function limitBuffer(stream: Readable): void {
  const state = (stream as { _readableState?: { highWaterMark?: unknown } })._readableState;
  if (state !== undefined && typeof state.highWaterMark === 'number' && state.highWaterMark > CHANNEL_BUFFER_BYTES) {
    state.highWaterMark = CHANNEL_BUFFER_BYTES;
  }
}

/**
 * Run `command` on the machine behind `connection` and resolve with how it
 * ended. Rejects with `ConnectionLostError` when the channel closes without an
 * exit status (the connection dropped: the outcome is unknown).
 */
export function runCommand(connection: SshConnection, command: string, options: RunCommandOptions): Promise<RunResult> {
  const { output, signal } = options;
  const { client } = connection;
  return new Promise<RunResult>((resolve, reject) => {
    let channel: ClientChannel | undefined;
    let settled = false;
    let exit: RunResult | undefined;

    const settle = (outcome: () => void): void => {
      if (settled) return;
      settled = true;
      signal.removeEventListener('abort', onAbort);
      output.off('error', onOutputError);
      outcome();
    };
    /** Stop the command now: its result no longer matters. */
    const kill = (): void => {
      if (channel !== undefined) {
        channel.unpipe(output);
        channel.stderr.unpipe(output);
        // killpg() on the session's process group; the connection's end then hangs up the terminal.
        channel.signal('KILL');
        channel.close();
      }
      void connection.close();
    };
    const onAbort = (): void => {
      kill();
      settle(() => reject(signal.reason));
    };
    const onOutputError = (err: Error): void => {
      kill();
      settle(() => reject(err));
    };

    if (signal.aborted) {
      onAbort();
      return;
    }
    signal.addEventListener('abort', onAbort, { once: true });
    output.on('error', onOutputError);

    const onChannel = (err: Error | undefined, opened: ClientChannel): void => {
      if (err) {
        settle(() => reject(lost(`could not start the script: ${err.message}`, err)));
        return;
      }
      if (settled) {
        opened.close(); // aborted while the channel was opening
        return;
      }
      channel = opened;
      limitBuffer(opened);
      limitBuffer(opened.stderr);
      opened.on('exit', (code: number | null, name?: string) => {
        exit = name === undefined || code !== null ? { exitCode: code } : { exitCode: null, signal: signalName(name) };
      });
      // 'close' comes after 'end', i.e. after every byte was handed to `output`.
      opened.on('close', () => {
        if (exit !== undefined) {
          const result = exit;
          void outputFlushed(output).then(() => settle(() => resolve(result)));
        } else {
          settle(() => reject(lost('the connection closed before the script reported an exit status')));
        }
      });
      // A terminal merges stderr into stdout; without one, stderr goes to the same log.
      opened.pipe(output, { end: false });
      opened.stderr.pipe(output, { end: false });
    };

    try {
      const pty = options.pty ?? BUILD_PTY;
      client.exec(command, pty === false ? {} : { pty }, onChannel);
    } catch (err) {
      settle(() => reject(lost(`could not start the script: ${errorMessage(err)}`, err)));
    }
  });
}
