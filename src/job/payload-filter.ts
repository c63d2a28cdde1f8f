/**
 * `TRAVIS_WORKER_PAYLOAD_FILTER_EXECUTABLE`: the payload is piped through an
 * operator's executable (JSON on stdin, JSON on stdout) before the build API
 * sees it, as travis-ci/worker's step_transform_build_json.go does. Unlike
 * travis, which logs a failure and goes on with the unfiltered payload, a
 * failing filter errors the job (PayloadFilterError says why).
 *
 * What the filter writes to stderr is not logged: it may echo the payload,
 * secure environment variables included.
 */
import { spawn } from 'node:child_process';
import { PayloadFilterError, errorMessage } from '../errors.js';
import { invalidJsonProblem } from '../redact.js';

/**
 * Longest a filter may run. travis waits without bound; a filter rewrites a
 * few hundred kB of JSON in well under a second, so a minute only ever
 * cuts off one that hangs.
 */
export const PAYLOAD_FILTER_TIMEOUT_MS = 60_000;

/** The filter `executable`'s rewrite of `raw`; at most `maxBytes` of output are read. */
export async function filterPayload(
  executable: string,
  raw: Record<string, unknown>,
  options: { maxBytes: number; signal: AbortSignal; timeoutMs?: number },
): Promise<Record<string, unknown>> {
  const timeoutMs = options.timeoutMs ?? PAYLOAD_FILTER_TIMEOUT_MS;
  const timedOut = AbortSignal.timeout(timeoutMs);
  const signal = AbortSignal.any([options.signal, timedOut]);
  const fail = (problem: string, cause?: unknown): PayloadFilterError =>
    new PayloadFilterError(`payload filter ${executable} ${problem}`, {
      userMessage: `The job payload filter (TRAVIS_WORKER_PAYLOAD_FILTER_EXECUTABLE) ${problem}.`,
      ...(cause === undefined ? {} : { cause }),
    });

  const child = spawn(executable, [], { stdio: ['pipe', 'pipe', 'ignore'], signal, killSignal: 'SIGKILL' });
  const chunks: Buffer[] = [];
  let size = 0;
  let overflow = false;
  child.stdout.on('data', (chunk: Buffer) => {
    size += chunk.length;
    if (size > options.maxBytes) {
      overflow = true;
      child.kill('SIGKILL');
    } else {
      chunks.push(chunk);
    }
  });
  // A filter that exits without reading all of stdin breaks the pipe: its exit status tells the story.
  child.stdin.on('error', () => {});
  child.stdin.end(JSON.stringify(raw));

  const exit = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code, exitSignal) => resolve({ code, signal: exitSignal }));
  }).catch((err: unknown) => {
    // The job stopping (cancel, shutdown) is the job's reason, not the filter's failure.
    if (options.signal.aborted) throw options.signal.reason;
    if (timedOut.aborted) throw fail(`did not finish within ${timeoutMs / 1000}s`);
    throw fail(`could not be run: ${errorMessage(err)}`, err);
  });
  if (overflow) throw fail(`printed more than ${options.maxBytes} bytes`);
  if (exit.code !== 0) throw fail(exit.signal ? `was killed by ${exit.signal}` : `exited with status ${exit.code}`);
  let filtered: unknown;
  try {
    filtered = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch (err) {
    throw fail(`printed ${invalidJsonProblem(err)}`, err);
  }
  if (typeof filtered !== 'object' || filtered === null || Array.isArray(filtered)) throw fail('printed JSON that is not an object');
  return filtered as Record<string, unknown>;
}
