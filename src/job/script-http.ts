/**
 * The build script from the build API (docs/protocol.md, "The build API"), as
 * travis-ci/worker's build_script_generator.go asks for it, plus what it
 * lacks: retries with backoff on network errors and 5xx, one deadline for
 * the whole exchange, and a cap on the answer's size.
 */
import pRetry from 'p-retry';
import { Agent, request, type Dispatcher } from 'undici';
import type { BuildApiConfig } from '../config/types.js';
import { ScriptRejectedError, ScriptTooLargeError, ScriptUnavailableError, errorMessage, isMayflyError } from '../errors.js';
import type { Logger } from '../logger.js';
import { VERSION } from '../version.js';
import type { JobPayload } from './payload.js';
import type { ScriptGenerator } from './script.js';

/**
 * The largest build script accepted, in bytes. Real travis-build scripts
 * are a few hundred kB; 16 MiB is far beyond any of them and bounds what one
 * job can make the worker hold in memory.
 */
export const MAX_SCRIPT_BYTES = 16 * 1024 * 1024;

/** Characters of an error answer's body quoted in the error message. */
const ERROR_BODY_CHARS = 200;
/** Bytes of an error answer read to quote from it; the rest is discarded. */
const ERROR_BODY_READ_BYTES = 4 * 1024;
/**
 * Backoff (p-retry): 1 s, 2 s, 4 s, 8 s, then 10 s, each times a random
 * 1-2. The count is only a ceiling: `timeoutMs` normally ends the retries.
 */
const RETRY = { retries: 20, factor: 2, minTimeout: 1000, maxTimeout: 10_000, randomize: true } as const;

export interface HttpScriptGeneratorOptions {
  /** Smallest retry delay in ms (default 1000); tests shorten it. */
  retryMinTimeoutMs?: number;
  /** Largest script accepted, in bytes (default `MAX_SCRIPT_BYTES`). */
  maxScriptBytes?: number;
}

/** A failure worth another attempt: the network, or a 5xx. */
class TransientError extends Error {}

/** A value set at `path` in `target`, creating (or replacing non-object) intermediate objects, as Go's simplejson SetPath. */
function setPath(target: Record<string, unknown>, path: readonly string[], value: unknown): void {
  let current = target;
  for (const key of path.slice(0, -1)) {
    const next = current[key];
    if (typeof next === 'object' && next !== null && !Array.isArray(next)) {
      current = next as Record<string, unknown>;
    } else {
      const created: Record<string, unknown> = {};
      current[key] = created;
      current = created;
    }
  }
  current[path[path.length - 1] as string] = value;
}

/**
 * The body sent to the build API: the raw payload plus the worker-side
 * settings, exactly the keys build_script_generator.go sets.
 */
export function buildApiRequestBody(raw: Record<string, unknown>, options: BuildApiConfig['options']): Record<string, unknown> {
  const body = structuredClone(raw);
  if (options.aptCache) setPath(body, ['hosts', 'apt_cache'], options.aptCache);
  if (options.npmCache) setPath(body, ['hosts', 'npm_cache'], options.npmCache);
  body.paranoid = options.paranoid;
  body.fix_resolv_conf = options.fixResolvConf;
  body.fix_etc_hosts = options.fixEtcHosts;
  if (options.cacheType) {
    const s3 = options.cacheS3;
    setPath(body, ['cache_options', 'type'], options.cacheType);
    setPath(body, ['cache_options', 'fetch_timeout'], options.cacheFetchTimeoutS);
    setPath(body, ['cache_options', 'push_timeout'], options.cachePushTimeoutS);
    // travis sends every S3 key, empty when unset.
    setPath(body, ['cache_options', 's3', 'scheme'], s3.scheme ?? '');
    setPath(body, ['cache_options', 's3', 'region'], s3.region ?? '');
    setPath(body, ['cache_options', 's3', 'bucket'], s3.bucket ?? '');
    setPath(body, ['cache_options', 's3', 'access_key_id'], s3.accessKeyId ?? '');
    setPath(body, ['cache_options', 's3', 'secret_access_key'], s3.secretAccessKey ?? '');
  }
  return body;
}

/** Read at most `limit` bytes of `body`; past that, stop reading (which destroys the stream). */
async function readAtMost(body: Dispatcher.ResponseData['body'], limit: number): Promise<{ bytes: Buffer; overflow: boolean }> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    if (size + chunk.length > limit) {
      chunks.push(chunk.subarray(0, limit - size));
      return { bytes: Buffer.concat(chunks), overflow: true };
    }
    chunks.push(chunk);
    size += chunk.length;
  }
  return { bytes: Buffer.concat(chunks), overflow: false };
}

export class HttpScriptGenerator implements ScriptGenerator {
  private readonly url: URL;
  /** From the URI's user name; sent as a header, never logged. */
  private readonly token: string | undefined;
  private readonly dispatcher: Dispatcher | undefined;
  private readonly retryMinTimeoutMs: number;
  private readonly maxScriptBytes: number;

  constructor(
    private readonly config: BuildApiConfig & { uri: string },
    private readonly logger: Logger,
    options: HttpScriptGeneratorOptions = {},
  ) {
    const url = new URL(config.uri);
    this.token = url.username ? decodeURIComponent(url.username) : undefined;
    url.username = '';
    url.password = '';
    this.url = url;
    this.dispatcher = config.insecureSkipVerify ? new Agent({ connect: { rejectUnauthorized: false } }) : undefined;
    this.retryMinTimeoutMs = options.retryMinTimeoutMs ?? RETRY.minTimeout;
    this.maxScriptBytes = options.maxScriptBytes ?? MAX_SCRIPT_BYTES;
  }

  async generate(payload: JobPayload, signal: AbortSignal): Promise<Buffer> {
    signal.throwIfAborted();
    const deadline = AbortSignal.timeout(this.config.timeoutMs);
    const combined = AbortSignal.any([signal, deadline]);
    const url = new URL(this.url);
    url.searchParams.set('job_id', String(payload.jobId));
    url.searchParams.set('source', 'worker');
    const body = JSON.stringify(buildApiRequestBody(payload.raw, this.config.options));
    // Where, for the worker log: no query (it may hold secrets), no credentials.
    const endpoint = `${url.origin}${url.pathname}`;
    let lastFailure: unknown;
    try {
      return await pRetry(() => this.attempt(url, body, combined), {
        ...RETRY,
        minTimeout: this.retryMinTimeoutMs,
        maxTimeout: Math.max(this.retryMinTimeoutMs, RETRY.maxTimeout),
        signal: combined,
        shouldRetry: (err) => err instanceof TransientError && !combined.aborted,
        onFailedAttempt: (err) => {
          lastFailure = err;
          if (err instanceof TransientError) {
            this.logger.warn(
              { job_id: payload.jobId, endpoint, attempt: err.attemptNumber, err: err.message },
              'build API request failed; retrying',
            );
          }
        },
      });
    } catch (err) {
      if (signal.aborted) throw signal.reason;
      // The answer's own verdict (refused, too large, ...): not a failure to reach the API.
      if (isMayflyError(err)) throw err;
      if (deadline.aborted) {
        const last = lastFailure === undefined ? '' : ` (last error: ${errorMessage(lastFailure)})`;
        throw new ScriptUnavailableError(`build API gave no script within ${this.config.timeoutMs} ms${last}`, {
          cause: lastFailure,
          userMessage: 'The build script could not be fetched in time.',
        });
      }
      throw new ScriptUnavailableError(`build API failed: ${errorMessage(err)}`, {
        cause: err,
        userMessage: 'The build script could not be fetched.',
      });
    }
  }

  private async attempt(url: URL, body: string, signal: AbortSignal): Promise<Buffer> {
    const headers: Record<string, string> = {
      'content-type': 'application/json',
      'user-agent': `mayfly/${VERSION}`,
    };
    if (this.token !== undefined) headers.authorization = `token ${this.token}`;
    let response: Dispatcher.ResponseData;
    try {
      response = await request(url, {
        method: 'POST',
        headers,
        body,
        signal,
        ...(this.dispatcher ? { dispatcher: this.dispatcher } : {}),
      });
    } catch (err) {
      if (signal.aborted) throw err;
      throw new TransientError(`network error: ${errorMessage(err)}`, { cause: err });
    }

    const { statusCode } = response;
    if (statusCode >= 200 && statusCode < 300) return this.readScript(response);

    const { bytes } = await readAtMost(response.body, ERROR_BODY_READ_BYTES).catch(() => ({ bytes: Buffer.alloc(0) }));
    const detail = `HTTP ${statusCode}: ${this.quote(bytes)}`;
    if (statusCode >= 500) throw new TransientError(`build API server error: ${detail}`);
    if (statusCode >= 400) {
      throw new ScriptRejectedError(`build API refused the job: ${detail}`, {
        userMessage: `The build script could not be generated (HTTP ${statusCode}).`,
      });
    }
    throw new ScriptUnavailableError(`build API answered with an unexpected status: ${detail}`);
  }

  private async readScript(response: Dispatcher.ResponseData): Promise<Buffer> {
    const declared = Number(response.headers['content-length']);
    if (Number.isFinite(declared) && declared > this.maxScriptBytes) {
      response.body.destroy();
      throw this.tooLarge(declared);
    }
    let result: { bytes: Buffer; overflow: boolean };
    try {
      result = await readAtMost(response.body, this.maxScriptBytes);
    } catch (err) {
      throw new TransientError(`reading the build script failed: ${errorMessage(err)}`, { cause: err });
    }
    if (result.overflow) throw this.tooLarge(undefined);
    if (result.bytes.length === 0) {
      throw new ScriptUnavailableError('build API answered with an empty script', {
        userMessage: 'The build API answered with an empty build script.',
      });
    }
    return result.bytes;
  }

  /** `declared`: the size the answer announced, when it did. */
  private tooLarge(declared: number | undefined): ScriptTooLargeError {
    const size = declared === undefined ? '' : ` (${declared} bytes)`;
    return new ScriptTooLargeError(`build script is over the ${this.maxScriptBytes}-byte limit${size}`, {
      userMessage: `The build script is too large${size}: the limit is ${this.maxScriptBytes} bytes.`,
    });
  }

  /** The start of an error body for a message, without the token should the server echo it. */
  private quote(bytes: Buffer): string {
    let text = bytes.toString('utf8');
    if (this.token) text = text.replaceAll(this.token, '[redacted]');
    return JSON.stringify(text.slice(0, ERROR_BODY_CHARS));
  }
}
