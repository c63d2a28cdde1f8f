/**
 * The heartbeat poll against a supervisor on loopback: credentials in
 * `TRAVIS_WORKER_HEARTBEAT_URL` work as basic auth and never reach the log.
 */
import { once } from 'node:events';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { pollHeartbeat, watchHeartbeat } from '../../src/lifecycle/heartbeat.js';
import { captureLog } from '../helpers/log-capture.js';

let supervisor: Server | undefined;
afterEach(async () => {
  supervisor?.close();
  if (supervisor?.listening) await once(supervisor, 'close');
  supervisor = undefined;
});

/** A supervisor that answers `status` with `body` and remembers each request's headers; returns its base URL with `user:password@`. */
async function startSupervisor(status: number, body: string, seen: IncomingHttpHeaders[]): Promise<string> {
  supervisor = createServer((request, response) => {
    seen.push(request.headers);
    response.writeHead(status, { 'content-type': 'application/json' });
    response.end(body);
  });
  supervisor.listen(0, '127.0.0.1');
  await once(supervisor, 'listening');
  return `http://hb-user:hb-p%40ss-s3cr3t@127.0.0.1:${(supervisor.address() as AddressInfo).port}/heartbeat`;
}

const basic = (credentials: string): string => `Basic ${Buffer.from(credentials).toString('base64')}`;

describe('heartbeat', () => {
  it('sends the URL credentials as basic auth', async () => {
    const seen: IncomingHttpHeaders[] = [];
    const url = await startSupervisor(200, '{"state":"up"}', seen);
    expect(await pollHeartbeat(url, undefined, new AbortController().signal)).toBe('up');
    expect(seen.map((headers) => headers.authorization)).toEqual([basic('hb-user:hb-p@ss-s3cr3t')]);
  });

  it('sends the token instead when both are given', async () => {
    const seen: IncomingHttpHeaders[] = [];
    const url = await startSupervisor(200, '{"state":"up"}', seen);
    await pollHeartbeat(url, 'tok3n', new AbortController().signal);
    expect(seen.map((headers) => headers.authorization)).toEqual(['token tok3n']);
  });

  it('never logs the password of the URL, neither when starting nor when a poll fails', async () => {
    const url = await startSupervisor(503, '{}', []);
    const log = captureLog();
    const stop = new AbortController();
    const watching = watchHeartbeat({ url, logger: log.logger, onDown: () => undefined, signal: stop.signal, errorIntervalMs: 60_000 });
    const failed = await log.waitFor((line) => line.msg === 'failed to get heartbeat', AbortSignal.timeout(10_000));
    stop.abort();
    await watching;
    expect(failed).toMatchObject({ err: 'unhappy status code 503', heartbeat_url: expect.stringMatching(/^http:\/\/\*\*\*\*:\*\*\*\*@127\.0\.0\.1:\d+\/heartbeat$/) });
    expect(JSON.stringify(log.lines)).not.toContain('s3cr3t');
  });
});
