/**
 * A fake EC2 instance metadata service (IMDSv2 only, as a launch template
 * with `HttpTokens: required` makes it) on loopback, for the SDK's
 * `AWS_EC2_METADATA_SERVICE_ENDPOINT`:
 *
 *   PUT /latest/api/token     with `X-aws-ec2-metadata-token-ttl-seconds` (1..21600) -> a token
 *   GET /latest/meta-data/... with `X-aws-ec2-metadata-token` -> the value, 404 when there is
 *                             none (no notice), 401 without a token or with an expired one
 *
 * It knows the instance's id and region, an instance-profile role whose
 * credentials the SDK's default chain picks up, and the notices a test
 * sets: the spot interruption (`spot/instance-action`), the Auto Scaling
 * target state (`autoscaling/target-lifecycle-state`) and the rebalance
 * recommendation (`events/recommendations/rebalance`). `mode` makes it
 * fail: 500s, garbage 200s, or answers that never come.
 */
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { listenOnLoopback, loopbackUrl } from './loopback-server.js';

/** How the fake answers reads: as IMDS does, with 500s, with an HTML page (a proxy in the way), or not at all. */
export type ImdsMode = 'ok' | 'error' | 'garbage' | 'hang';

/** One request the fake answered (or held, `status` 0). */
export interface ImdsRequest {
  method: string;
  path: string;
  status: number;
}

export interface FakeImdsOptions {
  instanceId?: string;
  region?: string;
  /** The instance profile's keys, as a FakeAutoScaling expects them. */
  credentials?: { accessKeyId: string; secretAccessKey: string };
}

const MAX_TTL_SECONDS = 21_600;
const ROLE = 'mayfly-host';

export class FakeImds extends EventEmitter<{ request: [ImdsRequest] }> {
  readonly instanceId: string;
  readonly region: string;
  readonly requests: ImdsRequest[] = [];
  mode: ImdsMode = 'ok';
  readonly #server: Server;
  /** token -> expiry (ms since the epoch). */
  readonly #tokens = new Map<string, number>();
  readonly #values = new Map<string, string>();
  readonly #held = new Set<ServerResponse>();

  private constructor(server: Server, options: FakeImdsOptions) {
    super();
    this.#server = server;
    this.instanceId = options.instanceId ?? `i-${randomBytes(9).toString('hex').slice(0, 17)}`;
    this.region = options.region ?? 'eu-west-1';
    this.#values.set('instance-id', this.instanceId);
    this.#values.set('placement/region', this.region);
    this.#values.set('autoscaling/target-lifecycle-state', 'InService');
    if (options.credentials) {
      const expiration = new Date(Date.now() + 6 * 3_600_000).toISOString();
      this.#values.set('iam/security-credentials/', ROLE);
      this.#values.set(
        `iam/security-credentials/${ROLE}`,
        JSON.stringify({
          Code: 'Success',
          LastUpdated: new Date().toISOString(),
          Type: 'AWS-HMAC',
          AccessKeyId: options.credentials.accessKeyId,
          SecretAccessKey: options.credentials.secretAccessKey,
          Token: 'fake-session-token',
          Expiration: expiration,
        }),
      );
    }
  }

  static async start(options: FakeImdsOptions = {}): Promise<FakeImds> {
    const server = createServer();
    const fake = new FakeImds(server, options);
    server.on('request', (request, response) => fake.#handle(request, response));
    await listenOnLoopback(server);
    return fake;
  }

  /** For `AWS_EC2_METADATA_SERVICE_ENDPOINT`. */
  get endpoint(): string {
    return loopbackUrl(this.#server);
  }

  /** The two-minute spot notice: `{"action":..., "time":...}` from now on. */
  noticeSpot(time: Date, action: 'terminate' | 'stop' | 'hibernate' = 'terminate'): void {
    this.#values.set('spot/instance-action', JSON.stringify({ action, time: time.toISOString().replace(/\.\d{3}Z$/, 'Z') }));
  }

  /** What Auto Scaling means to do with the instance (`Terminated` on scale-in). */
  setTargetLifecycleState(state: string): void {
    this.#values.set('autoscaling/target-lifecycle-state', state);
  }

  /** A rebalance recommendation: the instance is at elevated risk of interruption. */
  recommendRebalance(noticeTime: Date): void {
    this.#values.set('events/recommendations/rebalance', JSON.stringify({ noticeTime: noticeTime.toISOString().replace(/\.\d{3}Z$/, 'Z') }));
  }

  /** Set any metadata value (`undefined` removes it: 404). */
  set(path: string, value: string | undefined): void {
    if (value === undefined) this.#values.delete(path);
    else this.#values.set(path, value);
  }

  /** Every token issued so far expires now (reads with them get 401). */
  expireTokens(): void {
    for (const token of this.#tokens.keys()) this.#tokens.set(token, 0);
  }

  /** Reads of one metadata path so far (`spot/instance-action`, ...). */
  readsOf(path: string): ImdsRequest[] {
    return this.requests.filter((request) => request.method === 'GET' && request.path === `/latest/meta-data/${path}`);
  }

  async close(): Promise<void> {
    for (const response of this.#held) response.destroy();
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  #handle(request: IncomingMessage, response: ServerResponse): void {
    const path = new URL(request.url ?? '/', 'http://imds').pathname;
    const record: ImdsRequest = { method: request.method ?? '', path, status: 0 };
    this.requests.push(record);
    const answer = (status: number, body: string, type = 'text/plain'): void => {
      record.status = status;
      response.writeHead(status, { 'content-type': type });
      response.end(body);
      this.emit('request', record);
    };
    if (this.mode === 'hang') {
      this.#held.add(response);
      response.on('close', () => this.#held.delete(response));
      this.emit('request', record);
      return;
    }
    if (this.mode === 'error') return answer(500, 'Internal Server Error');
    if (this.mode === 'garbage') return answer(200, '<html><body><h1>Welcome to nginx!</h1></body></html>', 'text/html');
    if (request.method === 'PUT' && path === '/latest/api/token') {
      const ttl = Number(request.headers['x-aws-ec2-metadata-token-ttl-seconds']);
      if (!Number.isInteger(ttl) || ttl < 1 || ttl > MAX_TTL_SECONDS) return answer(400, 'Bad Request');
      const token = randomBytes(32).toString('base64url');
      this.#tokens.set(token, Date.now() + ttl * 1000);
      return answer(200, token);
    }
    if (request.method !== 'GET') return answer(405, 'Method Not Allowed');
    const token = request.headers['x-aws-ec2-metadata-token'];
    const expiry = typeof token === 'string' ? this.#tokens.get(token) : undefined;
    if (expiry === undefined || expiry <= Date.now()) return answer(401, 'Unauthorized');
    const prefix = '/latest/meta-data/';
    const value = path.startsWith(prefix) ? this.#values.get(path.slice(prefix.length)) : undefined;
    if (value === undefined) return answer(404, 'Not Found');
    return answer(200, value);
  }
}
