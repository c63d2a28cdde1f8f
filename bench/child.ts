/**
 * A child process of the bench, driven over IPC: either a whole worker
 * (src/main.ts `startWorker`, configured by `TRAVIS_WORKER_*` variables as
 * in production) or a raw amqplib echo for the round-trip baseline. Running
 * them apart from the bench process keeps their CPU time and memory their
 * own, and the bench's consumers off their event loop.
 *
 * Started with `--expose-gc` so that memory is read after a collection.
 */
import { createWriteStream, type WriteStream } from 'node:fs';
import { connect, type ChannelModel } from 'amqplib';
import type { Worker } from '../src/worker.js';
import { wallUs } from './stats.js';
import type { ChildReply, ChildRequest } from './child-protocol.js';

let worker: Worker | undefined;
let echo: ChannelModel | undefined;
let logFile: WriteStream | undefined;

function send(reply: ChildReply): void {
  process.send?.(reply);
}

/** CPU (µs, read first: the collection costs some) and memory (bytes, after a collection when available) of this process. */
function usage(): Extract<ChildReply, { type: 'usage' }> {
  const cpu = process.cpuUsage();
  (globalThis as { gc?: () => void }).gc?.();
  const memory = process.memoryUsage();
  return { type: 'usage', userUs: cpu.user, systemUs: cpu.system, rssBytes: memory.rss, heapUsedBytes: memory.heapUsed };
}

async function startBenchWorker(env: Record<string, string>, logPath: string, sequentialStart: boolean): Promise<void> {
  // Loaded here, not at the top: the echo needs none of it, and it takes seconds on a busy machine.
  const [{ pino }, { backends }, { loadConfig }, { startWorker }] = await Promise.all([
    import('pino'),
    import('../backends/index.js'),
    import('../src/config/load.js'),
    import('../src/main.js'),
  ]);
  const config = loadConfig(backends, { TRAVIS_WORKER_INITIAL_SLEEP: '0s', TRAVIS_WORKER_HOSTNAME: 'bench-worker', ...env });
  // Info level, as in production: the worker's own logging is part of its cost.
  logFile = createWriteStream(logPath, { flags: 'a' });
  const logger = pino({ level: 'info', base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime }, logFile);
  worker = await startWorker(config, backends, logger, { sequentialStart });
  worker.events.on('job-done', (done) => {
    const state = done.result.outcome === 'finished' ? done.result.state : done.result.outcome;
    send({ type: 'job-done', jobId: done.jobId, state, atUs: wallUs() });
  });
}

/** Consume `from` one delivery at a time (as a processor does) and publish each body to `to`, then ack. */
async function startEcho(uri: string, from: string, to: string): Promise<void> {
  echo = await connect(uri);
  const consumer = await echo.createChannel();
  const publisher = await echo.createConfirmChannel();
  await consumer.prefetch(1);
  await consumer.consume(from, (message) => {
    if (message === null) return;
    publisher.sendToQueue(to, message.content, { persistent: true, contentType: 'application/json' }, () => undefined);
    consumer.ack(message);
  });
}

let stopping: Promise<void> | undefined;

function stop(): Promise<void> {
  stopping ??= (async () => {
    await worker?.stop();
    await echo?.close().catch(() => undefined);
    await new Promise<void>((resolve) => (logFile ? logFile.end(resolve) : resolve()));
  })();
  return stopping;
}

async function handle(request: ChildRequest): Promise<void> {
  try {
    switch (request.type) {
      case 'start-worker':
        await startBenchWorker(request.env, request.logPath, request.sequentialStart);
        send({ type: 'ready' });
        return;
      case 'start-echo':
        await startEcho(request.uri, request.from, request.to);
        send({ type: 'ready' });
        return;
      case 'usage':
        send(usage());
        return;
      case 'stop':
        await stop();
        send({ type: 'stopped' });
        process.disconnect();
        return;
    }
  } catch (err) {
    send({ type: 'error', message: err instanceof Error ? err.message : String(err) });
  }
}

process.on('message', (request: ChildRequest) => void handle(request));
// The bench went away (killed, crashed): stop the worker so that its jobs go back and its connections close.
process.on('disconnect', () => {
  void stop().finally(() => process.exit(0));
  setTimeout(() => process.exit(1), 10_000).unref();
});
