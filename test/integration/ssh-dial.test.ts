/**
 * Dialling under the handshake cap (src/ssh/dial.ts): attempts beyond
 * MAX_CONCURRENT_HANDSHAKES wait with their TCP connection open, a wait
 * can be aborted, and aborted or failed attempts give their turn back.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { once } from 'node:events';
import { afterEach, expect, it } from 'vitest';
import { connectOnce, dial, MAX_CONCURRENT_HANDSHAKES } from '../../src/ssh/dial.js';
import { captureLog } from '../helpers/log-capture.js';
import { freePort } from '../helpers/ports.js';
import { generateClientKey, nextLoopbackAddress, startSshd } from '../helpers/sshd.js';

const key = generateClientKey();
const cleanups: (() => Promise<void>)[] = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/**
 * A TCP server that accepts and never answers: an SSH handshake against it
 * hangs. Counts connections and those on which the client sent its SSH
 * identification (the first thing ssh2 does once its handshake starts).
 */
async function silentServer(): Promise<{ server: Server; host: string; port: number; connections: number; handshaking: number; changed: () => Promise<void> }> {
  const sockets = new Set<Socket>();
  const host = nextLoopbackAddress();
  const state = {
    server: createServer((socket) => {
      sockets.add(socket);
      state.connections += 1;
      socket.on('error', () => undefined);
      socket.once('data', (chunk: Buffer) => {
        if (chunk.toString('latin1').startsWith('SSH-2.0-')) state.handshaking += 1;
        state.server.emit('changed');
      });
      state.server.emit('changed');
    }),
    host,
    port: 0,
    connections: 0,
    handshaking: 0,
    changed: async () => {
      await once(state.server, 'changed');
    },
  };
  state.server.listen(0, host);
  await once(state.server, 'listening');
  state.port = (state.server.address() as { port: number }).port;
  cleanups.push(async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise((resolve) => state.server.close(resolve));
  });
  return state;
}

it('starts at most MAX_CONCURRENT_HANDSHAKES handshakes, lets the others wait with TCP open, and frees every turn on abort', async () => {
  const server = await silentServer();
  const controller = new AbortController();
  const count = MAX_CONCURRENT_HANDSHAKES + 3;
  const attempts = Array.from({ length: count }, () =>
    connectOnce(
      { host: server.host, port: server.port, username: 'nobody', privateKey: key.privateKey },
      { signal: controller.signal, timeoutMs: 60_000 },
    ),
  );
  const settled = Promise.allSettled(attempts);
  while (server.connections < count || server.handshaking < MAX_CONCURRENT_HANDSHAKES) await server.changed();
  expect(server.handshaking).toBe(MAX_CONCURRENT_HANDSHAKES);

  controller.abort(new Error('test over'));
  const outcomes = await settled;
  expect(outcomes.every((outcome) => outcome.status === 'rejected' && String(outcome.reason).includes('test over'))).toBe(true);

  // Every turn came back: as many handshakes as the cap, against real sshd, all complete
  // (spread over targets: one sshd drops unauthenticated connections beyond 10, its MaxStartups).
  const perTarget = 8;
  const targets = await Promise.all(
    Array.from({ length: Math.ceil(MAX_CONCURRENT_HANDSHAKES / perTarget) }, async () => {
      const target = await startSshd({ authorizedKeys: [key.publicKey] });
      cleanups.push(() => target.stop());
      return target;
    }),
  );
  const signal = new AbortController().signal;
  const connections = await Promise.all(
    Array.from({ length: MAX_CONCURRENT_HANDSHAKES }, (_, i) => {
      const target = targets[Math.floor(i / perTarget)] as (typeof targets)[number];
      return connectOnce({ host: target.host, port: target.port, username: target.username, privateKey: key.privateKey }, { signal, timeoutMs: 30_000 });
    }),
  );
  await Promise.all(connections.map((connection) => connection.close()));
});

it('tries again soon after a refused connection, not after the whole retry sleep', async () => {
  const host = nextLoopbackAddress();
  const port = await freePort(host);
  const log = captureLog();
  // Ten minutes between attempts: only the short pauses after a refusal let this dial end within the test.
  const signal = AbortSignal.timeout(20_000);
  const dialling = dial(
    { host, port, username: 'root', privateKey: key.privateKey },
    { signal, retrySleepMs: 10 * 60_000, maxAttempts: 50, logger: log.logger },
  );
  const refused = await log.waitFor((line) => line.msg === 'ssh connection attempt failed', signal);
  expect(String(refused['err'])).toContain('ECONNREFUSED');
  // sshd starts listening once the machine has refused once, as a booting VM's would.
  const sshd = await startSshd({ authorizedKeys: [key.publicKey], host, port });
  cleanups.push(() => sshd.stop());
  const connection = await dialling;
  await connection.close();
});
