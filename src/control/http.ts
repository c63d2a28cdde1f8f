/**
 * A small HTTP toolkit for the control API and the debug port, on
 * `node:http`: a method+path router, basic auth compared in constant time,
 * JSON bodies validated with zod (a 400 names the offending field), and a
 * listener that closes its connections on `close()` so a drain is never held
 * up by a keep-alive socket. Six routes don't need a framework.
 */
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { timingSafeEqual, createHash } from 'node:crypto';
import { z } from 'zod';
import { errorMessage } from '../errors.js';
import type { Logger } from '../logger.js';

/** Bodies larger than this are refused: every control body is a few bytes of JSON. */
const MAX_BODY_BYTES = 16 * 1024;

/** An error with the status code and message the client gets. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = 'HttpError';
  }
}

export interface RouteContext {
  request: IncomingMessage;
  response: ServerResponse;
  url: URL;
}

export type Handler = (context: RouteContext) => Promise<void> | void;

export interface Route {
  method: string;
  path: string;
  /** False for routes anyone may call (health and readiness). */
  auth: boolean;
  handler: Handler;
}

export interface HttpServerOptions {
  /** Name for log lines (`control`, `debug`). */
  name: string;
  routes: Route[];
  /** `user:password`; routes with `auth` answer 403 when undefined (nothing to check against). */
  auth: string | undefined;
  /** When false, every route is served without auth (a debug port on loopback that the operator chose to leave open). */
  enforceAuth: boolean;
  logger: Logger;
}

export interface HttpListener {
  /** `http://host:port`, as bound (port 0 resolved). */
  readonly url: string;
  readonly address: AddressInfo;
  /** Stop listening and close every connection, idle or not. */
  close(): Promise<void>;
}

/** Constant-time comparison of the request's credentials with `user:password` (hashed first, so lengths don't leak). */
export function credentialsMatch(header: string | undefined, expected: string): boolean | undefined {
  const match = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header ?? '');
  if (!match) return undefined;
  const given = Buffer.from(match[1] as string, 'base64').toString('utf8');
  const digest = (text: string): Buffer => createHash('sha256').update(text).digest();
  return timingSafeEqual(digest(given), digest(expected));
}

/** Write a JSON answer. */
export function sendJson(response: ServerResponse, status: number, body: unknown): void {
  const text = `${JSON.stringify(body)}\n`;
  response.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  response.end(text);
}

/** Write a plain-text answer. */
export function sendText(response: ServerResponse, status: number, text: string): void {
  response.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(text) });
  response.end(text);
}

async function readBody(request: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request) {
    size += (chunk as Buffer).byteLength;
    if (size > MAX_BODY_BYTES) throw new HttpError(413, `the body is larger than ${MAX_BODY_BYTES} bytes`);
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** The request's JSON body validated by `schema`; a 400 says which field is wrong and why. */
export async function jsonBody<T>(request: IncomingMessage, schema: z.ZodType<T>): Promise<T> {
  const text = await readBody(request);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new HttpError(400, text.trim() === '' ? 'the body must be a JSON object' : 'the body is not valid JSON');
  }
  const parsed = schema.safeParse(value);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((issue) => `${issue.path.length === 0 ? 'body' : issue.path.join('.')}: ${issue.message}`);
    throw new HttpError(400, issues.join('; '));
  }
  return parsed.data;
}

/** A positive integer from a query parameter, or `fallback` when absent; 400 otherwise. */
export function intParam(url: URL, name: string, fallback: number, max: number): number {
  const text = url.searchParams.get(name);
  if (text === null || text === '') return fallback;
  if (!/^\d+$/.test(text) || Number(text) < 1 || Number(text) > max) {
    throw new HttpError(400, `${name}: must be a whole number from 1 to ${max}`);
  }
  return Number(text);
}

/** Serve `routes` on `host:port`. */
export async function listen(host: string, port: number, options: HttpServerOptions): Promise<HttpListener> {
  const logger = options.logger.child({ listener: options.name });
  const server: Server = createServer((request, response) => {
    void dispatch(request, response).catch((err: unknown) => {
      const status = err instanceof HttpError ? err.status : 500;
      if (status >= 500) logger.error({ method: request.method, path: request.url, err: errorMessage(err) }, 'request failed');
      if (response.headersSent) response.destroy();
      else sendJson(response, status, { error: err instanceof HttpError ? err.message : `internal error: ${errorMessage(err)}` });
    });
  });

  async function dispatch(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const url = new URL(request.url ?? '/', 'http://localhost');
    const forPath = options.routes.filter((route) => route.path === url.pathname);
    if (forPath.length === 0) throw new HttpError(404, `no route ${url.pathname}`);
    const route = forPath.find((candidate) => candidate.method === request.method);
    if (!route) {
      response.setHeader('allow', forPath.map((candidate) => candidate.method).join(', '));
      throw new HttpError(405, `${request.method} is not allowed on ${url.pathname}`);
    }
    if (route.auth && options.enforceAuth) {
      if (options.auth === undefined) {
        throw new HttpError(403, 'this route is disabled: set TRAVIS_WORKER_REMOTE_CONTROLLER_AUTH to use it');
      }
      const ok = credentialsMatch(request.headers.authorization, options.auth);
      if (ok === undefined) {
        response.setHeader('www-authenticate', 'Basic realm="mayfly"');
        throw new HttpError(401, 'credentials required (basic auth)');
      }
      if (!ok) {
        logger.warn({ method: request.method, path: url.pathname }, 'incorrect credentials provided');
        throw new HttpError(403, 'incorrect credentials');
      }
    }
    await route.handler({ request, response, url });
  }

  server.listen(port, host);
  await Promise.race([
    once(server, 'listening'),
    once(server, 'error').then(([err]) => {
      throw new Error(`${options.name} listener could not bind ${host}:${port}: ${errorMessage(err)}`);
    }),
  ]);
  const address = server.address() as AddressInfo;
  const shownHost = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const url = `http://${shownHost}:${address.port}`;
  logger.info({ url }, `${options.name} listener started`);
  let closing: Promise<void> | undefined;
  return {
    url,
    address,
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closing;
    },
  };
}
