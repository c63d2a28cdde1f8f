/**
 * Putting the build script on the machine over SFTP, refusing a machine that
 * already has one: it ran a job before, and running another there would mix
 * two jobs' state (travis-ci/worker's "stale VM" check).
 */
import type { Client, SFTPWrapper, Stats } from 'ssh2';
import { StaleVmError, UploadError, errorMessage } from '../errors.js';

/** SFTP status code for "no such file" (draft-ietf-secsh-filexfer-02, SSH_FX_NO_SUCH_FILE). */
const SFTP_NO_SUCH_FILE = 2;
/** The script is run as `bash <path>`, but keep it executable as travis-ci/worker does. */
const SCRIPT_MODE = 0o755;

export interface UploadScriptOptions {
  /** Path on the machine; relative paths are relative to the SFTP start directory (the home directory). */
  path: string;
  signal: AbortSignal;
}

/**
 * Settle with `work`, or with `signal.reason` as soon as the signal aborts
 * (after calling `onAbort` to stop the work).
 */
function abortable<T>(signal: AbortSignal, onAbort: () => void, work: Promise<T>): Promise<T> {
  if (signal.aborted) {
    onAbort();
    return Promise.reject(signal.reason);
  }
  return new Promise<T>((resolve, reject) => {
    const abort = (): void => {
      onAbort();
      reject(signal.reason);
    };
    signal.addEventListener('abort', abort, { once: true });
    work.then(
      (value) => {
        signal.removeEventListener('abort', abort);
        resolve(value);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', abort);
        reject(err);
      },
    );
  });
}

function openSftp(client: Client): Promise<SFTPWrapper> {
  return new Promise((resolve, reject) => {
    client.sftp((err, sftp) => (err ? reject(err) : resolve(sftp)));
  });
}

/** Resolves with the file's stats, or undefined when it does not exist. */
function lstatIfExists(sftp: SFTPWrapper, path: string): Promise<Stats | undefined> {
  return new Promise((resolve, reject) => {
    sftp.lstat(path, (err, stats) => {
      if (!err) resolve(stats);
      else if ((err as Error & { code?: unknown }).code === SFTP_NO_SUCH_FILE) resolve(undefined);
      else reject(err);
    });
  });
}

function writeFile(sftp: SFTPWrapper, path: string, data: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    sftp.writeFile(path, data, { mode: SCRIPT_MODE }, (err) => (err ? reject(err) : resolve()));
  });
}

/**
 * Write `script` to `options.path` on the machine behind `client`.
 * Throws `StaleVmError` if the file is already there, `UploadError` when SFTP
 * fails, and `signal.reason` when the signal aborts.
 */
export async function uploadScript(client: Client, script: Buffer, options: UploadScriptOptions): Promise<void> {
  const { signal, path } = options;
  let sftp: SFTPWrapper | undefined;
  const stop = (): void => sftp?.end();
  try {
    sftp = await abortable(signal, stop, openSftp(client));
    const existing = await abortable(signal, stop, lstatIfExists(sftp, path));
    if (existing !== undefined) {
      throw new StaleVmError(`${path} already exists on the machine: it ran a job before`, {
        userMessage: 'The build machine had already been used; the job will be run on another one.',
      });
    }
    await abortable(signal, stop, writeFile(sftp, path, script));
  } catch (err) {
    if (signal.aborted) throw signal.reason;
    if (err instanceof StaleVmError) throw err;
    throw new UploadError(`uploading ${path} failed: ${errorMessage(err)}`, {
      cause: err,
      userMessage: 'The build script could not be uploaded to the build machine.',
    });
  } finally {
    sftp?.end();
  }
}
