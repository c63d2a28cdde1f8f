/**
 * The Docker Engine API over HTTP with undici: a unix socket by default, TCP
 * (with TLS and client certificates when a cert path is set) otherwise. Every
 * call goes through `CloudApi` (metrics per operation; retried only when the
 * engine could not be reached at all, so a request is never sent twice), and
 * every error answer is parsed (`{"message": ...}`) into a `DockerApiError`
 * that carries the HTTP status. Responses are validated with zod.
 *
 * Over the usual size: the transport (socket, TCP, TLS), its error
 * handling and the version negotiation are one client.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Duplex, Readable } from 'node:stream';
import { Agent, type Dispatcher } from 'undici';
import { z } from 'zod';
import {
  CloudApi,
  CloudCallError,
  errorMessage,
  type CloudErrorKind,
  type BackendMetrics,
  type Logger,
} from '../../src/backend/kit.js';
import type { EngineAddress } from './settings.js';

/**
 * The newest API version whose fields this backend was checked against
 * (Docker 27). A newer engine still serves it; an older one is used at its
 * own version (everything used here exists since 1.30).
 */
export const MAX_API_VERSION = '1.47';
/** Error bodies are short JSON; anything longer is cut, so a misbehaving proxy can't fill memory. */
const ERROR_BODY_LIMIT_BYTES = 64 * 1024;
/** Failures of `connect()` itself: nothing reached the engine, so trying again can't do anything twice. */
const CONNECT_FAILURES = new Set(['ECONNREFUSED', 'ENOENT', 'EAI_AGAIN', 'EHOSTUNREACH', 'UND_ERR_CONNECT_TIMEOUT']);
/**
 * Longest a call that is not `longLived` waits for the engine to begin its
 * answer: undici's default, kept. Every short call is answered in well under
 * a second by an engine that works; one that has not begun in 5 minutes is hung.
 */
const ANSWER_HEADERS_TIMEOUT_MS = 300_000;

/** Node's codes for an engine certificate that did not verify (OpenSSL's verify errors, and a name that does not match). */
const CERTIFICATE_FAILURES = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_SIGNATURE_FAILURE',
  'CERT_UNTRUSTED',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

/**
 * For an engine whose certificate did not verify, which setting restores
 * travis' way: travis-ci/worker skipped the check unless TLS_VERIFY was
 * set; mayfly verifies unless it is `false`. Empty for any other failure.
 */
function certificateHint(err: unknown, certPath: string): string {
  const code = (err as { code?: unknown } | undefined)?.code;
  if (typeof code !== 'string' || !CERTIFICATE_FAILURES.has(code)) return '';
  return ` (the engine's certificate did not verify against ${join(certPath, 'ca.pem')}; TRAVIS_WORKER_DOCKER_TLS_VERIFY=false skips the check, as travis-ci/worker did when TLS_VERIFY was unset)`;
}

/** A failed Engine API call. `status` is the HTTP status, 0 when no answer came. */
export class DockerApiError extends Error {
  constructor(
    readonly operation: string,
    readonly status: number,
    /** The engine's own message (its JSON `message`), or what went wrong on the way. */
    readonly engineMessage: string,
    options: { cause?: unknown } = {},
  ) {
    super(`docker ${operation}: ${status === 0 ? '' : `${status} `}${engineMessage}`, options);
    this.name = 'DockerApiError';
  }
}

/** The HTTP status of a failed call, or undefined when `err` is not one. */
export function dockerStatus(err: unknown): number | undefined {
  return err instanceof DockerApiError ? err.status : undefined;
}

const errorBody = z.object({ message: z.string() });
const versionSchema = z.object({ ApiVersion: z.string().regex(/^\d+\.\d+$/) });

export interface DockerApiOptions {
  address: EngineAddress;
  /** Directory with `ca.pem`, `cert.pem`, `key.pem` for a TLS endpoint; empty = none. */
  certPath: string;
  tlsVerify: boolean;
  /** Pinned API version (`1.41`); empty = negotiate with the engine. */
  apiVersion: string;
  metrics: BackendMetrics;
  logger: Logger;
  /** Longest a call that is not `longLived` waits for the answer to begin, in ms; `ANSWER_HEADERS_TIMEOUT_MS` unless a test lowers it. */
  headersTimeoutMs?: number;
}

export interface CallOptions {
  method: Dispatcher.HttpMethod;
  /** Path after the version prefix, e.g. `/containers/create`. */
  path: string;
  query?: Record<string, string | number | boolean>;
  /** JSON-encoded unless it is a Buffer (sent as `application/x-tar`). */
  body?: unknown;
  signal: AbortSignal;
  /** Non-2xx statuses the caller handles itself (e.g. 404, 304) instead of an error. */
  accept?: readonly number[];
  /**
   * Wait for the answer for as long as it takes (exec output, wait, pull, a
   * stop that waits out its grace period), bounded only by `signal`.
   */
  longLived?: boolean;
}

/** An answer whose body the caller reads (or must dump). */
export interface RawAnswer {
  status: number;
  body: Readable & { dump(): Promise<void>; text(): Promise<string> };
}

/** A version `1.41` as comparable numbers. */
function versionParts(version: string): [number, number] {
  const [major, minor] = version.split('.').map(Number);
  return [major ?? 0, minor ?? 0];
}

export function olderVersion(a: string, b: string): string {
  const [am, an] = versionParts(a);
  const [bm, bn] = versionParts(b);
  return am < bm || (am === bm && an <= bn) ? a : b;
}

function readPem(certPath: string, file: string): Buffer {
  const path = join(certPath, file);
  try {
    return readFileSync(path);
  } catch (err) {
    throw new Error(`cannot read ${path}: ${errorMessage(err)}`, { cause: err });
  }
}

/** The CA, client certificate and key of CERT_PATH; throws an `Error` naming a file that can't be read. */
export function readTlsFiles(certPath: string): { ca: Buffer; cert: Buffer; key: Buffer } {
  return { ca: readPem(certPath, 'ca.pem'), cert: readPem(certPath, 'cert.pem'), key: readPem(certPath, 'key.pem') };
}

function classify(err: unknown): CloudErrorKind {
  if (!(err instanceof DockerApiError)) return 'fatal';
  if (err.status === 0) {
    const code = (err.cause as { code?: unknown } | undefined)?.code;
    return typeof code === 'string' && CONNECT_FAILURES.has(code) ? 'transient' : 'fatal';
  }
  if (err.status === 429) return 'throttled';
  if (err.status === 404) return 'not-found';
  return 'fatal';
}

export class DockerApi {
  readonly #dispatcher: Agent;
  readonly #origin: string;
  readonly #options: DockerApiOptions;
  readonly #cloud: CloudApi;
  #version: Promise<string> | undefined;

  /** Throws an `Error` when the TLS files can't be read (checked at load: `validateSettings`). */
  constructor(options: DockerApiOptions) {
    this.#options = options;
    const { address } = options;
    const headersTimeout = options.headersTimeoutMs ?? ANSWER_HEADERS_TIMEOUT_MS;
    if (address.kind === 'unix') {
      this.#origin = 'http://docker';
      this.#dispatcher = new Agent({ headersTimeout, connect: { socketPath: address.socketPath } });
    } else {
      this.#origin = address.origin;
      this.#dispatcher = new Agent({
        headersTimeout,
        ...(address.tls && options.certPath !== ''
          ? {
              connect: {
                ...readTlsFiles(options.certPath),
                rejectUnauthorized: options.tlsVerify,
              },
            }
          : {}),
      });
    }
    this.#cloud = new CloudApi({
      backend: 'docker',
      maxCalls: 0,
      intervalMs: 0,
      classify,
      metrics: options.metrics,
      logger: options.logger,
      // A local engine that is restarting is back within seconds; longer than that is an outage.
      retries: 3,
      minDelayMs: 200,
      maxDelayMs: 2_000,
    });
  }

  /** Where the engine is, for log lines and errors. */
  get label(): string {
    return this.#options.address.label;
  }

  /** The API version in use: the pinned one, or the engine's (capped at `MAX_API_VERSION`), asked once. */
  version(signal: AbortSignal): Promise<string> {
    if (this.#options.apiVersion !== '') return Promise.resolve(this.#options.apiVersion);
    if (this.#version === undefined) {
      const asked = this.#call('version', { method: 'GET', path: '/version', signal }, false).then(async (answer) => {
        const { ApiVersion } = parse('version', versionSchema, await readJson('version', answer));
        return olderVersion(ApiVersion, MAX_API_VERSION);
      });
      // A failed negotiation is asked again by the next call, not remembered.
      asked.catch(() => {
        if (this.#version === asked) this.#version = undefined;
      });
      this.#version = asked;
    }
    return this.#version;
  }

  /** A call whose JSON answer is validated by `schema`. */
  async json<T>(operation: string, schema: z.ZodType<T>, options: CallOptions): Promise<T> {
    const answer = await this.call(operation, options);
    return parse(operation, schema, await readJson(operation, answer));
  }

  /** A call whose answer has no body worth reading; resolves with its status. */
  async empty(operation: string, options: CallOptions): Promise<number> {
    const answer = await this.call(operation, options);
    await answer.body.dump();
    return answer.status;
  }

  /** A call whose body the caller consumes (a stream). */
  call(operation: string, options: CallOptions): Promise<RawAnswer> {
    return this.#call(operation, options, true);
  }

  /**
   * A call the engine answers by handing over the connection as a raw
   * stream (exec start): the socket itself, with no HTTP parser between the
   * stream and its reader. (Read as a close-delimited HTTP body instead,
   * undici trips an assertion when the engine closes the stream while the
   * reader applies backpressure.) A refusal has no readable status here.
   */
  async upgrade(operation: string, options: CallOptions): Promise<Duplex> {
    const prefix = `/v${await this.version(options.signal)}`;
    return this.#cloud
      .call(
        operation,
        async (signal) => {
          try {
            // An Agent needs the origin of each request, and exec start takes a body; undici's upgrade types leave both out.
            const request: Dispatcher.UpgradeOptions & { origin: string; body: string } = {
              origin: this.#origin,
              method: options.method,
              path: prefix + options.path,
              headers: { 'content-type': 'application/json' },
              body: JSON.stringify(options.body ?? {}),
              protocol: 'tcp',
              signal,
            };
            const { socket } = await this.#dispatcher.upgrade(request);
            return socket;
          } catch (err) {
            if (signal.aborted) throw err;
            throw new DockerApiError(operation, 0, `the engine at ${this.label} did not hand over the stream: ${errorMessage(err)}${this.#hint(err)}`, {
              cause: err,
            });
          }
        },
        options.signal,
      )
      .catch((err: unknown) => {
        throw err instanceof CloudCallError && err.cause instanceof DockerApiError ? err.cause : err;
      });
  }

  async close(): Promise<void> {
    await this.#dispatcher.close();
  }

  /** The certificate hint, when this API verifies certificates at all. */
  #hint(err: unknown): string {
    return this.#options.tlsVerify && this.#options.certPath !== '' ? certificateHint(err, this.#options.certPath) : '';
  }

  async #call(operation: string, options: CallOptions, versioned: boolean): Promise<RawAnswer> {
    const prefix = versioned ? `/v${await this.version(options.signal)}` : '';
    return this.#cloud.call(
      operation,
      async (signal) => {
        const isTar = Buffer.isBuffer(options.body);
        let response: Dispatcher.ResponseData;
        try {
          response = await this.#dispatcher.request({
            origin: this.#origin,
            method: options.method,
            path: prefix + options.path,
            ...(options.query === undefined ? {} : { query: options.query }),
            headers: options.body === undefined ? {} : { 'content-type': isTar ? 'application/x-tar' : 'application/json' },
            body: options.body === undefined ? null : isTar ? (options.body as Buffer) : JSON.stringify(options.body),
            signal,
            ...(options.longLived === true ? { headersTimeout: 0, bodyTimeout: 0 } : {}),
          });
        } catch (err) {
          if (signal.aborted) throw err;
          throw new DockerApiError(operation, 0, `cannot reach the engine at ${this.label}: ${errorMessage(err)}${this.#hint(err)}`, { cause: err });
        }
        const { statusCode } = response;
        if ((statusCode >= 200 && statusCode < 300) || options.accept?.includes(statusCode) === true) {
          return { status: statusCode, body: response.body };
        }
        throw new DockerApiError(operation, statusCode, await errorText(response.body));
      },
      options.signal,
    ).catch((err: unknown) => {
      // CloudApi says what kind of failure it was; callers want the engine's status and message.
      throw err instanceof CloudCallError && err.cause instanceof DockerApiError ? err.cause : err;
    });
  }
}

/** The engine's `message`, or the start of whatever else it sent. */
async function errorText(body: Readable): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of body) {
      const buffer = chunk as Buffer;
      if (size < ERROR_BODY_LIMIT_BYTES) chunks.push(buffer.subarray(0, ERROR_BODY_LIMIT_BYTES - size));
      size += buffer.length;
    }
  } catch (err) {
    return `(the error answer broke off: ${errorMessage(err)})`;
  }
  const text = Buffer.concat(chunks).toString('utf8');
  try {
    const parsed = errorBody.safeParse(JSON.parse(text));
    if (parsed.success) return parsed.data.message;
  } catch {
    // not JSON: fall through to the text itself
  }
  return text.trim() === '' ? '(no message)' : text.trim().slice(0, 500);
}

async function readJson(operation: string, answer: RawAnswer): Promise<unknown> {
  const text = await answer.body.text();
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new DockerApiError(operation, answer.status, `the engine's answer is not JSON: ${text.slice(0, 200)}`, { cause: err });
  }
}

function parse<T>(operation: string, schema: z.ZodType<T>, value: unknown): T {
  const result = schema.safeParse(value);
  if (!result.success) {
    throw new DockerApiError(operation, 200, `unexpected answer: ${z.prettifyError(result.error)}`, { cause: result.error });
  }
  return result.data;
}
