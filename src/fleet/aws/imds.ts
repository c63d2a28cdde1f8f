/**
 * EC2's instance metadata service, IMDSv2 only: a session token from
 * `PUT /latest/api/token` (with its TTL), then reads with that token. The
 * token is kept and fetched again shortly before it expires, or at once
 * when IMDS answers 401 (it expired early, or IMDS restarted). The endpoint
 * is the SDK's: `AWS_EC2_METADATA_SERVICE_ENDPOINT` (or
 * `AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE`, or the shared config file), read
 * by @smithy/credential-provider-imds as every AWS SDK reads it.
 *
 * Not @aws-sdk/ec2-metadata-service: it fetches a new token for every read,
 * takes no AbortSignal, and after one slow token request it stops asking for
 * tokens for good, which would turn a moment of slowness into a host that
 * never hears a notice again.
 */
import { getInstanceMetadataEndpoint } from '@smithy/credential-provider-imds';
import { errorMessage, HostMetadataError } from '../../errors.js';

/** IMDS's longest token lifetime, in seconds (EC2 user guide, "Use IMDSv2"). */
export const IMDS_MAX_TOKEN_TTL_SECONDS = 21_600;
/** A read may take this long: IMDS answers from the host itself, in milliseconds; the SDK's own default is 1 s. */
const IMDS_REQUEST_TIMEOUT_MS = 2_000;
/** A token is renewed when it has less than this share of its life left, so a read never goes out with one about to expire. */
const TOKEN_RENEW_SHARE = 0.1;

export interface ImdsOptions {
  /** The base URL (`http://127.0.0.1:PORT`); else the SDK's endpoint settings. */
  endpoint?: string;
  /** The token's lifetime asked for, in seconds; default (and most) 21600. */
  tokenTtlSeconds?: number;
  /** Longest one request may take, in ms; default 2000. */
  requestTimeoutMs?: number;
}

export class ImdsClient {
  readonly #tokenTtlSeconds: number;
  readonly #requestTimeoutMs: number;
  #endpoint: string | undefined;
  #token: { value: string; renewAt: number } | undefined;

  constructor(options: ImdsOptions = {}) {
    this.#endpoint = options.endpoint;
    this.#tokenTtlSeconds = options.tokenTtlSeconds ?? IMDS_MAX_TOKEN_TTL_SECONDS;
    this.#requestTimeoutMs = options.requestTimeoutMs ?? IMDS_REQUEST_TIMEOUT_MS;
  }

  /**
   * The text at `latest/meta-data/<path>`, or undefined when IMDS has none
   * (404: e.g. no spot notice yet). Throws `HostMetadataError` otherwise.
   */
  async get(path: string, signal: AbortSignal): Promise<string | undefined> {
    let response = await this.#read(path, await this.#currentToken(signal), signal);
    if (response.status === 401) {
      // Read the refusal off its connection, as the other answers below are, before asking again.
      await response.body?.cancel();
      this.#token = undefined;
      response = await this.#read(path, await this.#currentToken(signal), signal);
    }
    if (response.status === 404) {
      await response.body?.cancel();
      return undefined;
    }
    if (response.status !== 200) {
      await response.body?.cancel();
      throw new HostMetadataError(`instance metadata ${path}: HTTP ${response.status}`);
    }
    return response.text();
  }

  /** Like `get`, but a missing value is an error: for what every instance has (its id, its region). */
  async require(path: string, signal: AbortSignal): Promise<string> {
    const value = await this.get(path, signal);
    if (value === undefined || value.trim() === '') throw new HostMetadataError(`instance metadata ${path}: missing`);
    return value.trim();
  }

  async #base(): Promise<string> {
    if (this.#endpoint === undefined) {
      const { protocol, hostname, port } = await getInstanceMetadataEndpoint();
      this.#endpoint = `${protocol}//${hostname}${port === undefined ? '' : `:${port}`}`;
    }
    return this.#endpoint.replace(/\/+$/, '');
  }

  async #currentToken(signal: AbortSignal): Promise<string> {
    if (this.#token && Date.now() < this.#token.renewAt) return this.#token.value;
    const requestedAt = Date.now();
    const response = await this.#fetch('/latest/api/token', { method: 'PUT', headers: { 'x-aws-ec2-metadata-token-ttl-seconds': String(this.#tokenTtlSeconds) } }, signal);
    const value = (await response.text()).trim();
    if (response.status !== 200) throw new HostMetadataError(`instance metadata token: HTTP ${response.status}`);
    // A token is a base64-ish string of a few dozen characters; anything else (an HTML page, a JSON error) is not one.
    if (!/^[A-Za-z0-9+/=_-]{1,1024}$/.test(value)) throw new HostMetadataError('instance metadata token: the answer is not a token');
    this.#token = { value, renewAt: requestedAt + this.#tokenTtlSeconds * 1000 * (1 - TOKEN_RENEW_SHARE) };
    return value;
  }

  #read(path: string, token: string, signal: AbortSignal): Promise<Response> {
    return this.#fetch(`/latest/meta-data/${path}`, { headers: { 'x-aws-ec2-metadata-token': token } }, signal);
  }

  async #fetch(path: string, init: RequestInit, signal: AbortSignal): Promise<Response> {
    const url = `${await this.#base()}${path}`;
    try {
      return await fetch(url, { ...init, redirect: 'error', signal: AbortSignal.any([signal, AbortSignal.timeout(this.#requestTimeoutMs)]) });
    } catch (err) {
      signal.throwIfAborted();
      throw new HostMetadataError(`instance metadata ${path}: ${errorMessage(err)}`, { cause: err });
    }
  }
}
