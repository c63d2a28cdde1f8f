import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { DockerApi } from '../../backends/docker/api.js';
import { DockerEngine } from '../../backends/docker/engine.js';
import { silentLogger } from '../../src/logger.js';

/** The engine client's wait for an answer to begin, lowered so that a stop outlasts it in a test. */
const HEADERS_TIMEOUT_MS = 50;
/**
 * The stop's grace period, as the engine spends it before answering: past
 * the lowered headers timeout even as undici checks its timeouts (about
 * once a second, so a 50 ms timeout fires within 1 to 2 s).
 */
const GRACE_MS = 4_000;

const closers: (() => Promise<void>)[] = [];

afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
});

/** A loopback stand-in for the engine that answers a stop only after its grace period, as dockerd does. */
async function slowStoppingEngine(): Promise<{ engine: DockerEngine; stops: string[] }> {
  const stops: string[] = [];
  const server = createServer((request: IncomingMessage, response: ServerResponse) => {
    stops.push(`${request.method} ${request.url}`);
    // The engine's own wait, not the test waiting for something: the answer is due when the grace period is over.
    void delay(GRACE_MS).then(() => response.writeHead(204).end());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  closers.push(() => new Promise((resolve) => server.close(() => resolve())));
  const { port } = server.address() as AddressInfo;
  const api = new DockerApi({
    address: { kind: 'tcp', origin: `http://127.0.0.1:${port}`, tls: false, label: `tcp://127.0.0.1:${port}` },
    certPath: '',
    tlsVerify: true,
    apiVersion: '1.41',
    metrics: { apiCall: () => {} },
    logger: silentLogger,
    headersTimeoutMs: HEADERS_TIMEOUT_MS,
  });
  closers.push(() => api.close());
  return { engine: new DockerEngine(api), stops };
}

describe('docker engine: stopping a container', () => {
  it('waits for the engine as long as the grace period takes, past the timeout of short calls', async () => {
    const { engine, stops } = await slowStoppingEngine();
    const stopped = await engine.stopContainer('c0ffee', 600, AbortSignal.timeout(60_000));
    expect(stopped).toBe(true);
    expect(stops).toEqual(['POST /v1.41/containers/c0ffee/stop?t=600']);
  });
});
