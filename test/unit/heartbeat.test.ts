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

describe("cli_test.go's heartbeat answers", () => {
  it('has the effect travis gives each: failures retried, a missing or up state ignored, down drains', async () => {
    // TestCLI_heartbeatHandler's supervisor, answer by answer.
    const answers: [number, string][] = [
      [404, 'no\n'],
      [200, '{bork\n'],
      [200, '{"etat": "sous"}'],
      [200, '{"state": true}'],
      [200, '{"state": "up"}'],
      [200, '{"state": "down"}'],
    ];
    let served = 0;
    supervisor = createServer((_request, response) => {
      const [status, body] = answers[Math.min(served++, answers.length - 1)] as [number, string];
      response.writeHead(status);
      response.end(body);
    });
    supervisor.listen(0, '127.0.0.1');
    await once(supervisor, 'listening');
    const url = `http://127.0.0.1:${(supervisor.address() as AddressInfo).port}/`;
    const log = captureLog();
    let drainedAfter: number | undefined;
    await watchHeartbeat({
      url,
      logger: log.logger,
      onDown: () => (drainedAfter = served),
      signal: AbortSignal.timeout(10_000),
      intervalMs: 0,
      errorIntervalMs: 0,
    });
    // Drained on the sixth answer and not before; the 404, the broken JSON and the
    // mistyped state were failed polls (travis: an error, retried), the others not.
    expect(drainedAfter).toBe(6);
    const failures = log.lines.filter((line) => line.msg === 'failed to get heartbeat');
    expect(failures).toHaveLength(3);
    expect(failures[0]).toMatchObject({ err: 'unhappy status code 404' });
  });
});
