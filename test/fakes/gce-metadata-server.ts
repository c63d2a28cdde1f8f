/**
 * A fake GCE metadata server for the host's own notices, on loopback, for
 * `GCE_METADATA_HOST`: `GET /computeMetadata/v1/instance/<key>` with
 * `Metadata-Flavor: Google` (403 without), answering with the value, an
 * `ETag` and `Metadata-Flavor: Google`. With `wait_for_change=true` the
 * answer hangs until the value's ETag differs from `last_etag` (or from the
 * current one when none is given), or `timeout_sec` passes, as the real
 * server does. `preempt()` and `maintenance()` change the values; `mode`
 * makes it fail: 500s, or garbage 200s without the flavor header.
 */
import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { listenOnLoopback, loopbackUrl } from './loopback-server.js';

export type GceMetadataMode = 'ok' | 'error' | 'garbage';

export interface GceMetadataRequest {
  key: string;
  waitForChange: boolean;
  lastEtag: string | undefined;
  /** 0 while the answer hangs. */
  status: number;
}

interface Waiter {
  key: string;
  lastEtag: string;
  response: ServerResponse;
  record: GceMetadataRequest;
  timer: NodeJS.Timeout;
}

const etagOf = (value: string): string => createHash('sha256').update(value).digest('hex').slice(0, 16);

export class FakeGceMetadata extends EventEmitter<{ request: [GceMetadataRequest] }> {
  readonly requests: GceMetadataRequest[] = [];
  mode: GceMetadataMode = 'ok';
  readonly #server: Server;
  readonly #values = new Map<string, string>([
    ['instance/preempted', 'FALSE'],
    ['instance/maintenance-event', 'NONE'],
  ]);
  readonly #waiters = new Set<Waiter>();

  private constructor(server: Server) {
    super();
    this.#server = server;
  }

  static async start(): Promise<FakeGceMetadata> {
    const server = createServer();
    const fake = new FakeGceMetadata(server);
    server.on('request', (request, response) => fake.#handle(request, response));
    await listenOnLoopback(server);
    return fake;
  }

  /** `127.0.0.1:PORT`, for `GCE_METADATA_HOST`. */
  get host(): string {
    return new URL(loopbackUrl(this.#server)).host;
  }

  /** The VM is being preempted: `instance/preempted` turns TRUE. */
  preempt(): void {
    this.set('instance/preempted', 'TRUE');
  }

  /** A host maintenance event (`TERMINATE_ON_HOST_MAINTENANCE`, `MIGRATE_ON_HOST_MAINTENANCE`, `NONE`). */
  maintenance(event: string): void {
    this.set('instance/maintenance-event', event);
  }

  /** Set a value; waiting polls of it whose ETag differs now answer. */
  set(key: string, value: string): void {
    this.#values.set(key, value);
    for (const waiter of [...this.#waiters]) {
      if (waiter.key === key && waiter.lastEtag !== etagOf(value)) this.#answer(waiter);
    }
  }

  /** Long polls hanging now, by key. */
  waiting(key: string): number {
    return [...this.#waiters].filter((waiter) => waiter.key === key).length;
  }

  async close(): Promise<void> {
    for (const waiter of this.#waiters) clearTimeout(waiter.timer);
    this.#waiters.clear();
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  #handle(request: IncomingMessage, response: ServerResponse): void {
    const url = new URL(request.url ?? '/', 'http://metadata');
    const prefix = '/computeMetadata/v1/';
    const key = url.pathname.startsWith(prefix) ? url.pathname.slice(prefix.length) : url.pathname;
    const waitForChange = url.searchParams.get('wait_for_change') === 'true';
    const record: GceMetadataRequest = { key, waitForChange, lastEtag: url.searchParams.get('last_etag') ?? undefined, status: 0 };
    this.requests.push(record);
    const answer = (status: number, body: string, headers: Record<string, string> = { 'Metadata-Flavor': 'Google' }): void => {
      record.status = status;
      response.writeHead(status, { 'Content-Type': 'application/text', ...headers });
      response.end(body);
      this.emit('request', record);
    };
    if (this.mode === 'error') return answer(500, 'Internal Server Error');
    if (this.mode === 'garbage') return answer(200, '<html><body>Sign in to the hotel wifi</body></html>', { 'Content-Type': 'text/html' });
    if (request.headers['metadata-flavor'] !== 'Google') return answer(403, 'Missing Metadata-Flavor:Google header.');
    const value = this.#values.get(key);
    if (value === undefined) return answer(404, 'Not Found');
    if (!waitForChange) return answer(200, value, { 'Metadata-Flavor': 'Google', ETag: etagOf(value) });
    const lastEtag = record.lastEtag ?? etagOf(value);
    const timeoutSec = Number(url.searchParams.get('timeout_sec') ?? '3600');
    const waiter: Waiter = { key, lastEtag, response, record, timer: setTimeout(() => this.#answer(waiter), timeoutSec * 1000) };
    if (lastEtag !== etagOf(value)) return this.#answer(waiter);
    this.#waiters.add(waiter);
    response.on('close', () => {
      clearTimeout(waiter.timer);
      this.#waiters.delete(waiter);
    });
    this.emit('request', record);
  }

  #answer(waiter: Waiter): void {
    clearTimeout(waiter.timer);
    this.#waiters.delete(waiter);
    const value = this.#values.get(waiter.key) ?? '';
    waiter.record.status = 200;
    waiter.response.writeHead(200, { 'Content-Type': 'application/text', 'Metadata-Flavor': 'Google', ETag: etagOf(value) });
    waiter.response.end(value);
    this.emit('request', waiter.record);
  }
}
