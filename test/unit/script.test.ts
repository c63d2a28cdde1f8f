import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import type { BuildApiConfig } from '../../src/config/types.js';
import { PayloadError, ScriptRejectedError, ScriptTooLargeError, ScriptUnavailableError } from '../../src/errors.js';
import { createLogger, silentLogger } from '../../src/logger.js';
import { parseJobPayload, type JobPayload } from '../../src/job/payload.js';
import { MAX_SCRIPT_BYTES, createScriptGenerator } from '../../src/job/script.js';
import { generateBuiltinScript } from '../../src/job/script-builtin.js';
import { HttpScriptGenerator } from '../../src/job/script-http.js';

const TOKEN = 'sekrit-t0ken';
const version = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

function payloadOf(fields: Record<string, unknown> = {}): JobPayload {
  const raw = {
    type: 'test',
    job: { id: 721270, number: '445.1', queued_at: '2018-05-14T14:26:50Z' },
    source: { id: 721269, number: '445' },
    repository: { id: 44461, slug: 'octo/hello-world' },
    config: { language: 'ruby', script: 'echo Hello World' },
    env_vars: [],
    timeouts: { hard_limit: 3000, log_silence: null },
    ...fields,
  };
  const parsed = parseJobPayload(Buffer.from(JSON.stringify(raw)));
  if (parsed.kind !== 'ok' || parsed.payload.invalid) throw new Error(`bad test payload: ${JSON.stringify(parsed)}`);
  return parsed.payload;
}

function apiConfig(uri: string | undefined, overrides: Partial<BuildApiConfig> = {}): BuildApiConfig {
  return {
    ...(uri === undefined ? {} : { uri }),
    insecureSkipVerify: false,
    timeoutMs: 10_000,
    options: {
      paranoid: true,
      fixResolvConf: false,
      fixEtcHosts: true,
      cacheFetchTimeoutS: 600,
      cachePushTimeoutS: 3600,
      cacheS3: {},
    },
    ...overrides,
  };
}

interface Recorded {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
  body: string;
}

type Handler = (req: IncomingMessage, res: ServerResponse, index: number) => void;

interface TestServer {
  base: string;
  port: number;
  requests: Recorded[];
  /** Resolves once `count` requests have fully arrived. */
  received(count: number): Promise<void>;
}

const cleanups: Array<() => Promise<void>> = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/**
 * Listen on a loopback port until the test's cleanup, which also cuts any
 * connection still open (a server that never answers would hold close() up).
 */
async function listenUntilCleanup(server: Server | HttpsServer, connectionEvent: 'connection' | 'secureConnection'): Promise<number> {
  const sockets = new Set<Socket>();
  server.on(connectionEvent, (socket: Socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise((resolve) => server.close(resolve));
  });
  return (server.address() as AddressInfo).port;
}

async function startServer(handler: Handler): Promise<TestServer> {
  const requests: Recorded[] = [];
  const waiters: Array<{ count: number; resolve: () => void }> = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const index = requests.length;
      requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
      for (const waiter of waiters.filter((w) => requests.length >= w.count)) waiter.resolve();
      handler(req, res, index);
    });
  });
  const port = await listenUntilCleanup(server, 'connection');
  return {
    base: `http://127.0.0.1:${port}`,
    port,
    requests,
    received: (count) =>
      requests.length >= count ? Promise.resolve() : new Promise((resolve) => waiters.push({ count, resolve })),
  };
}

function answer(status: number, body: string): Handler {
  return (_req, res) => {
    res.writeHead(status, { 'content-type': 'text/plain' });
    res.end(body);
  };
}

/** A logger whose lines are kept, to check what was (not) logged. */
function capturingLogger(): { logger: ReturnType<typeof createLogger>; lines: string[] } {
  const lines: string[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      lines.push(chunk.toString('utf8'));
      callback();
    },
  });
  return { logger: createLogger({ destination, pretty: false, level: 'debug' }), lines };
}

const never = new AbortController().signal;

describe('build API request', () => {
  it('posts the payload with the worker settings, token header and query', async () => {
    const server = await startServer(answer(200, '#!/bin/bash\necho hi\n'));
    const uri = `http://${TOKEN}@127.0.0.1:${server.port}/script?foo=bar`;
    const config = apiConfig(uri, {
      options: {
        aptCache: 'http://apt.example:3142',
        paranoid: true,
        fixResolvConf: false,
        fixEtcHosts: true,
        cacheType: 's3',
        cacheFetchTimeoutS: 600,
        cachePushTimeoutS: 3600,
        cacheS3: { bucket: 'caches', region: 'eu-west-1' },
      },
    });
    const payload = payloadOf({ hosts: { other: 'kept' } });
    const rawBefore = structuredClone(payload.raw);

    const script = await createScriptGenerator(config, silentLogger).generate(payload, never);

    expect(script.toString()).toBe('#!/bin/bash\necho hi\n');
    expect(server.requests).toHaveLength(1);
    const [req] = server.requests as [Recorded];
    expect(req.method).toBe('POST');
    const url = new URL(req.url, server.base);
    expect(url.pathname).toBe('/script');
    expect(Object.fromEntries(url.searchParams)).toEqual({ foo: 'bar', job_id: '721270', source: 'worker' });
    expect(req.url).not.toContain(TOKEN);
    expect(req.headers.authorization).toBe(`token ${TOKEN}`);
    expect(req.headers['content-type']).toBe('application/json');
    expect(req.headers['user-agent']).toBe(`mayfly/${version}`);
    expect(JSON.parse(req.body)).toEqual({
      ...rawBefore,
      hosts: { other: 'kept', apt_cache: 'http://apt.example:3142' },
      paranoid: true,
      fix_resolv_conf: false,
      fix_etc_hosts: true,
      cache_options: {
        type: 's3',
        fetch_timeout: 600,
        push_timeout: 3600,
        s3: { scheme: '', region: 'eu-west-1', bucket: 'caches', access_key_id: '', secret_access_key: '' },
      },
    });
    expect(payload.raw).toEqual(rawBefore);
  });

  it('adds only the always-sent settings when no cache or hosts are configured', async () => {
    const server = await startServer(answer(200, 'echo hi'));
    await createScriptGenerator(apiConfig(`${server.base}/`), silentLogger).generate(payloadOf(), never);
    const [req] = server.requests as [Recorded];
    const body = JSON.parse(req.body) as Record<string, unknown>;
    expect(body).not.toHaveProperty('hosts');
    expect(body).not.toHaveProperty('cache_options');
    expect(body).toMatchObject({ paranoid: true, fix_resolv_conf: false, fix_etc_hosts: true });
    expect(req.headers).not.toHaveProperty('authorization');
    expect(new URL(req.url, server.base).search).toBe('?job_id=721270&source=worker');
  });
});

describe('build API failures', () => {
  it('retries a 5xx, then returns the script; the token is never logged', async () => {
    const server = await startServer((req, res, index) =>
      index < 2 ? answer(503, `overloaded ${TOKEN}`)(req, res, index) : answer(200, 'echo third time')(req, res, index),
    );
    const { logger, lines } = capturingLogger();
    const generator = new HttpScriptGenerator({ ...apiConfig(undefined), uri: `http://${TOKEN}@127.0.0.1:${server.port}/` }, logger, {
      retryMinTimeoutMs: 5,
    });
    const script = await generator.generate(payloadOf(), never);
    expect(script.toString()).toBe('echo third time');
    expect(server.requests).toHaveLength(3);
    expect(lines.filter((line) => line.includes('retrying'))).toHaveLength(2);
    expect(lines.join('')).not.toContain(TOKEN);
  });

  it('does not retry a 4xx: ScriptRejectedError with the status and the start of the body', async () => {
    const body = `${'x'.repeat(200)}${'y'.repeat(100)} ${TOKEN}`;
    const server = await startServer(answer(404, body));
    const generator = new HttpScriptGenerator({ ...apiConfig(undefined), uri: `http://${TOKEN}@127.0.0.1:${server.port}/` }, silentLogger, {
      retryMinTimeoutMs: 5,
    });
    const error = await generator.generate(payloadOf(), never).catch((err: unknown) => err);
    expect(error).toBeInstanceOf(ScriptRejectedError);
    const message = (error as Error).message;
    expect(message).toContain('404');
    expect(message).toContain('x'.repeat(200));
    expect(message).not.toContain('y');
    expect(server.requests).toHaveLength(1);
  });

  it('never puts the token in an error message, even when the server echoes it', async () => {
    const server = await startServer(answer(400, `bad token ${TOKEN}`));
    const error = await createScriptGenerator(apiConfig(`http://${TOKEN}@127.0.0.1:${server.port}/`), silentLogger)
      .generate(payloadOf(), never)
      .catch((err: unknown) => err);
    expect(error).toBeInstanceOf(ScriptRejectedError);
    expect((error as Error).message).toContain('bad token');
    expect((error as Error).message).not.toContain(TOKEN);
  });

  it('gives up with ScriptUnavailableError when the API does not answer in time', async () => {
    const server = await startServer(() => {
      // Never answer.
    });
    const generator = createScriptGenerator(apiConfig(`${server.base}/`, { timeoutMs: 200 }), silentLogger);
    const error = await generator.generate(payloadOf(), never).catch((err: unknown) => err);
    expect(error).toBeInstanceOf(ScriptUnavailableError);
    expect(server.requests).toHaveLength(1);
  });

  it('retries network errors until the deadline, then ScriptUnavailableError', async () => {
    const server = await startServer(answer(200, 'unused'));
    const port = server.port;
    await cleanups.pop()?.(); // close it: connections are refused from now on
    const generator = new HttpScriptGenerator({ ...apiConfig(undefined, { timeoutMs: 300 }), uri: `http://127.0.0.1:${port}/` }, silentLogger, {
      retryMinTimeoutMs: 5,
    });
    const error = await generator.generate(payloadOf(), never).catch((err: unknown) => err);
    expect(error).toBeInstanceOf(ScriptUnavailableError);
    expect((error as Error).message).toMatch(/ECONNREFUSED/);
  });

  it('stops reading an answer larger than the limit: ScriptTooLargeError, which does not requeue', async () => {
    let serverSawClose!: Promise<void>;
    const server = await startServer((_req, res) => {
      // An endless body: only a reader that stops at the limit gets an answer.
      res.writeHead(200, { 'content-type': 'text/plain' });
      const chunk = Buffer.alloc(16 * 1024, 0x61);
      const pump = (): void => {
        while (!res.destroyed && res.write(chunk));
      };
      res.on('drain', pump);
      serverSawClose = new Promise((resolve) => res.on('close', () => resolve()));
      pump();
    });
    const generator = new HttpScriptGenerator({ ...apiConfig(undefined), uri: `${server.base}/` }, silentLogger, {
      maxScriptBytes: 256 * 1024,
    });
    const error = await generator.generate(payloadOf(), never).catch((err: unknown) => err);
    expect(error).toBeInstanceOf(ScriptTooLargeError);
    expect(error).toMatchObject({ requeue: false, userMessage: `The build script is too large: the limit is ${256 * 1024} bytes.` });
    expect(server.requests).toHaveLength(1);
    // The client hung up instead of reading on.
    await serverSawClose;
  });

  it('refuses a declared Content-Length over MAX_SCRIPT_BYTES without reading it', async () => {
    const server = await startServer((_req, res) => {
      res.writeHead(200, { 'content-length': String(MAX_SCRIPT_BYTES + 1) });
      res.write('#!/bin/bash\n'); // and never the rest
    });
    const generator = createScriptGenerator(apiConfig(`${server.base}/`), silentLogger);
    const error = await generator.generate(payloadOf(), never).catch((err: unknown) => err);
    expect(error).toBeInstanceOf(ScriptTooLargeError);
    expect((error as ScriptTooLargeError).userMessage).toBe(`The build script is too large (${MAX_SCRIPT_BYTES + 1} bytes): the limit is ${MAX_SCRIPT_BYTES} bytes.`);
    expect(server.requests).toHaveLength(1);
  });

  it('treats an empty answer as ScriptUnavailableError', async () => {
    const server = await startServer(answer(200, ''));
    const error = await createScriptGenerator(apiConfig(`${server.base}/`), silentLogger)
      .generate(payloadOf(), never)
      .catch((err: unknown) => err);
    expect(error).toBeInstanceOf(ScriptUnavailableError);
    expect((error as Error).message).toContain('empty');
  });

  it("rethrows the caller's abort reason as it is", async () => {
    const server = await startServer(() => {
      // Never answer.
    });
    const controller = new AbortController();
    const generating = createScriptGenerator(apiConfig(`${server.base}/`), silentLogger).generate(payloadOf(), controller.signal);
    await server.received(1);
    const reason = new Error('job cancelled');
    controller.abort(reason);
    await expect(generating).rejects.toBe(reason);
  });

  it('does not call the API when the signal has already aborted', async () => {
    const server = await startServer(answer(200, 'echo hi'));
    const reason = new Error('shutting down');
    const error = await createScriptGenerator(apiConfig(`${server.base}/`), silentLogger)
      .generate(payloadOf(), AbortSignal.abort(reason))
      .catch((err: unknown) => err);
    expect(error).toBe(reason);
    expect(server.requests).toHaveLength(0);
  });
});

describe('build API over TLS', () => {
  async function selfSignedServer(): Promise<string> {
    const dir = await mkdtemp(join(tmpdir(), 'mayfly-tls-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const key = join(dir, 'key.pem');
    const cert = join(dir, 'cert.pem');
    await promisify(execFile)('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=127.0.0.1',
    ]);
    const server = createHttpsServer({ key: readFileSync(key), cert: readFileSync(cert) }, (_req, res) => {
      res.end('echo over tls');
    });
    return `https://127.0.0.1:${await listenUntilCleanup(server, 'secureConnection')}/`;
  }

  it('accepts a self-signed certificate only with insecureSkipVerify', async () => {
    const uri = await selfSignedServer();
    const insecure = createScriptGenerator(apiConfig(uri, { insecureSkipVerify: true }), silentLogger);
    expect((await insecure.generate(payloadOf(), never)).toString()).toBe('echo over tls');

    const verifying = new HttpScriptGenerator({ ...apiConfig(undefined, { timeoutMs: 300 }), uri }, silentLogger, { retryMinTimeoutMs: 5 });
    const error = await verifying.generate(payloadOf(), never).catch((err: unknown) => err);
    expect(error).toBeInstanceOf(ScriptUnavailableError);
    expect((error as Error).message).toMatch(/certificate/i);
  });
});

interface BashResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

async function runScript(script: string | Buffer): Promise<BashResult & { dir: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'mayfly-script-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'build.sh');
  await writeFile(file, script);
  return new Promise((resolve) => {
    execFile('bash', [file], { cwd: dir, env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: dir } }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : null) : 0;
      resolve({ code, stdout, stderr, dir });
    });
  });
}

async function builtin(config: Record<string, unknown>, fields: Record<string, unknown> = {}): Promise<Buffer> {
  return createScriptGenerator(apiConfig(undefined), silentLogger).generate(payloadOf({ config, ...fields }), never);
}

describe('built-in script generator', () => {
  it('runs the phases in order, echoing each command, and exits 0', async () => {
    const script = await builtin({
      script: ['echo four', 'echo five'],
      before_script: 'echo three',
      install: ['echo two'],
      before_install: 'echo one',
    });
    expect(script.toString().startsWith('#!/bin/bash\n')).toBe(true);
    const result = await runScript(script);
    expect(result.code).toBe(0);
    expect(result.stdout.split('\n')).toEqual([
      '$ echo one',
      'one',
      '$ echo two',
      'two',
      '$ echo three',
      'three',
      '$ echo four',
      'four',
      '$ echo five',
      'five',
      '',
      'Done. Your build exited with 0.',
      '',
    ]);
  });

  it('stops at the first failing command and exits 1 like it', async () => {
    const result = await runScript(await builtin({ script: ['echo a', 'false', 'echo never'] }));
    expect(result.code).toBe(1);
    expect(result.stdout).toContain('$ echo a\na\n$ false\n');
    expect(result.stdout).toContain('The command "false" exited with 1.');
    expect(result.stdout).not.toContain('never');
  });

  it('exits with the status of the failing command: exit 3 in install skips the script', async () => {
    const result = await runScript(await builtin({ install: 'exit 3', script: 'echo never' }));
    expect(result.code).toBe(3);
    expect(result.stdout).not.toContain('never');
  });

  it('reports a failing subshell and a syntax error with their statuses', async () => {
    const subshell = await runScript(await builtin({ script: ['(exit 3)', 'echo never'] }));
    expect(subshell.code).toBe(3);
    expect(subshell.stdout).toContain('The command "(exit 3)" exited with 3.');
    const syntax = await runScript(await builtin({ script: ['echo "unterminated', 'echo never'] }));
    expect(syntax.code).toBe(2);
    expect(syntax.stdout).not.toContain('never');
  });

  it('keeps shell state between commands, as travis does', async () => {
    const result = await runScript(await builtin({ before_script: ['cd /', 'export GREETING=hi'], script: 'echo "$GREETING from $(pwd)"' }));
    expect(result.code).toBe(0);
    expect(result.stdout).toContain('hi from /\n');
  });

  it('exports env vars literally, whatever they contain, and hides private ones', async () => {
    const tricky = `it's "quoted" $(touch pwned) \`touch pwned2\` $HOME; echo injected\nline 2 \\ '' "`;
    const script = await builtin(
      { script: 'printf "%s|%s|%s|\\n" "$TRICKY" "$SECRET" "$EMPTY"' },
      {
        env_vars: [
          { name: 'TRICKY', value: tricky, public: true },
          { name: 'SECRET', value: 'hunter2', public: false },
          { name: 'EMPTY', value: '', public: true },
        ],
      },
    );
    const result = await runScript(script);
    expect(result.code).toBe(0);
    expect(result.stdout).toContain(`\n${tricky}|hunter2||\n`);
    expect(result.stdout).toContain('$ export SECRET=[secure]');
    expect(result.stdout.match(/hunter2/g)).toHaveLength(1);
    expect(existsSync(join(result.dir, 'pwned'))).toBe(false);
    expect(existsSync(join(result.dir, 'pwned2'))).toBe(false);
  });

  it('requires config.script and checks the phase types', () => {
    const expectField = (config: Record<string, unknown>, field: string): void => {
      let error: unknown;
      try {
        generateBuiltinScript(payloadOf({ config }));
      } catch (err) {
        error = err;
      }
      expect(error).toBeInstanceOf(PayloadError);
      expect((error as PayloadError).field).toBe(field);
    };
    expectField({ language: 'ruby' }, 'config.script');
    expectField({ script: 42 }, 'config.script');
    expectField({ script: ['echo', { run: 'x' }] }, 'config.script');
    expectField({ script: [] }, 'config.script');
    expectField({ script: 'echo', install: true }, 'config.install');
  });

  it('rejects env vars that are not shell names', async () => {
    await expect(builtin({ script: 'true' }, { env_vars: [{ name: 'A-B; rm -rf /', value: 'x', public: true }] })).rejects.toMatchObject({
      field: 'env_vars.0.name',
    });
  });

  it('does not run when the signal has already aborted', async () => {
    const reason = new Error('stop');
    await expect(
      createScriptGenerator(apiConfig(undefined), silentLogger).generate(payloadOf(), AbortSignal.abort(reason)),
    ).rejects.toBe(reason);
  });
});
