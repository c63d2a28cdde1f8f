/**
 * Debian's Prometheus scraping a live worker (file queue, local backend,
 * one job run) at the control API's /metrics with basic auth, on loopback,
 * and the series read back through Prometheus' own query API; promtool's
 * lint of the same /metrics text.
 *
 * The worker is scraped through a pass-through in the test that says when
 * each scrape arrives: Prometheus commits a scrape's samples before it starts
 * the next one, so after the second scrape since the job ended, the first
 * one's samples can be queried. No waiting on time.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter, once } from 'node:events';
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { STAGES } from '../../src/queue/file/layout.js';
import { freePort } from '../helpers/ports.js';
import { runTool } from '../helpers/tools.js';
import { startTestWorker, type TestWorker } from '../helpers/worker.js';

const USER = 'scraper';
const PASSWORD = 'prom-s3cret';
const CREDENTIALS = { authorization: `Basic ${Buffer.from(`${USER}:${PASSWORD}`).toString('base64')}` };

let base: string;
let worker: TestWorker;
let passThrough: Server;
const scrapes = new EventEmitter();
let prometheus: ChildProcess | undefined;
let prometheusUrl: string;

/** Resolves when `count` more scrapes have reached the worker. */
async function scraped(count: number): Promise<void> {
  for (let i = 0; i < count; i++) await once(scrapes, 'scrape');
}

async function query(expression: string): Promise<{ metric: Record<string, string>; value: [number, string] }[]> {
  const response = await fetch(`${prometheusUrl}/api/v1/query?query=${encodeURIComponent(expression)}`);
  const body = (await response.json()) as { status: string; data: { result: { metric: Record<string, string>; value: [number, string] }[] } };
  expect(body.status).toBe('success');
  return body.data.result;
}

beforeAll(async () => {
  base = await mkdtemp(join(tmpdir(), 'mayfly-prometheus-'));
  worker = await startTestWorker({
    TRAVIS_WORKER_QUEUE_TYPE: 'file',
    TRAVIS_WORKER_BASE_DIR: base,
    TRAVIS_WORKER_PROVIDER_NAME: 'local',
    TRAVIS_WORKER_LOCAL_SCRIPTS_DIR: join(base, 'scripts'),
    TRAVIS_WORKER_REMOTE_CONTROLLER_ADDR: '127.0.0.1:0',
    TRAVIS_WORKER_REMOTE_CONTROLLER_AUTH: `${USER}:${PASSWORD}`,
  });
  const done = worker.jobDone(1);
  const payload = {
    type: 'test',
    job: { id: 1, number: '1.1', queued_at: new Date().toISOString() },
    repository: { id: 1, slug: 'octo/metrics' },
    config: { language: 'shell', script: 'echo scraped' },
    timeouts: {},
  };
  await writeFile(join(base, '1.json.tmp'), JSON.stringify(payload));
  await rename(join(base, '1.json.tmp'), join(base, 'builds', STAGES.created, '1.json'));
  expect((await done).result).toEqual({ outcome: 'finished', state: 'passed' });

  // Forwards each scrape, its credentials included, to the worker's control API.
  const control = worker.worker.controlUrl;
  if (control === undefined) throw new Error('no control API');
  passThrough = createServer((request, response) => {
    scrapes.emit('scrape');
    fetch(`${control}${request.url ?? '/'}`, { headers: { authorization: request.headers.authorization ?? '' } }).then(
      async (answer) => {
        response.writeHead(answer.status, { 'content-type': answer.headers.get('content-type') ?? 'text/plain' });
        response.end(Buffer.from(await answer.arrayBuffer()));
      },
      (err: unknown) => response.destroy(err as Error),
    );
  }).listen(0, '127.0.0.1');
  await once(passThrough, 'listening');
  const target = `127.0.0.1:${(passThrough.address() as AddressInfo).port}`;

  const port = await freePort();
  prometheusUrl = `http://127.0.0.1:${port}`;
  const config = join(base, 'prometheus.yml');
  await writeFile(
    config,
    [
      'global: { scrape_interval: 1s, scrape_timeout: 1s }',
      'scrape_configs:',
      '  - job_name: mayfly',
      `    basic_auth: { username: ${USER}, password: ${PASSWORD} }`,
      `    static_configs: [{ targets: ['${target}'] }]`,
      '',
    ].join('\n'),
  );
  prometheus = spawn(
    'prometheus',
    [`--config.file=${config}`, `--storage.tsdb.path=${join(base, 'tsdb')}`, `--web.listen-address=127.0.0.1:${port}`],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  const [failedToStart] = await Promise.race([
    once(prometheus, 'error'),
    (async () => {
      // Prometheus says on stderr when its query API serves.
      for await (const line of createInterface({ input: prometheus.stderr! })) if (line.includes('Server is ready to receive web requests')) return [];
      return [new Error('prometheus exited before it was ready')];
    })(),
  ]);
  if (failedToStart !== undefined) throw new Error(`prometheus did not start (scripts/test-prerequisites.sh installs it): ${String(failedToStart)}`);
  prometheus.stderr?.resume();
}, 60_000);

afterAll(async () => {
  if (prometheus?.exitCode === null) {
    prometheus.kill('SIGTERM');
    await once(prometheus, 'exit');
  }
  passThrough?.close();
  await worker?.stop();
  await rm(base, { recursive: true, force: true });
});

describe('Prometheus against a live worker', () => {
  it("scrapes /metrics with basic auth and answers the worker's series through its query API", async () => {
    await scraped(2);
    expect(await query('up{job="mayfly"}')).toEqual([expect.objectContaining({ value: [expect.any(Number), '1'] })]);
    const jobs = await query('mayfly_jobs_total{job="mayfly"}');
    expect(jobs.map(({ metric, value }) => [metric.state, metric.backend, value[1]])).toEqual([['passed', 'local', '1']]);
    const workerState = await query('mayfly_worker_state == 1');
    expect(workerState.map(({ metric }) => metric.state)).toEqual(['RUNNING']);
    expect(await query('mayfly_pool_size')).toEqual([expect.objectContaining({ value: [expect.any(Number), '1'] })]);
    const started = await query('mayfly_job_time_to_started_seconds_count');
    expect(started.map(({ value }) => value[1])).toEqual(['1']);
  });

  it('passes promtool check metrics', async () => {
    const text = await (await fetch(`${worker.worker.controlUrl}/metrics`, { headers: CREDENTIALS })).text();
    expect(text).toContain('mayfly_jobs_total');
    const { code, stdout, stderr } = await runTool('promtool', ['check', 'metrics'], { input: text });
    expect({ code, problems: `${stdout}${stderr}` }).toEqual({ code: 0, problems: '' });
  });
});
