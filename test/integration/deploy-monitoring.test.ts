/**
 * What operators import (deploy/): the Prometheus alert rules pass
 * `promtool test rules` (each alert shown firing and not firing), and the
 * rules and the Grafana dashboard name only metrics the worker exports, in
 * queries Prometheus parses. The exported names are read from the worker's
 * own exporter, with every metric recorded once.
 */
import { once } from 'node:events';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { JobResult } from '../../src/job/outcome.js';
import { createPrometheusMetrics } from '../../src/telemetry/metrics.js';
import { runTool } from '../helpers/tools.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const RULES = join(ROOT, 'deploy/prometheus/mayfly-rules.yml');
const RULES_TEST = join(ROOT, 'deploy/prometheus/mayfly-rules.test.yml');
const DASHBOARD = join(ROOT, 'deploy/grafana/mayfly.json');

/** Every series name the worker's /metrics can carry (a histogram's as `_bucket`, `_sum`, `_count`). */
async function exportedNames(): Promise<Set<string>> {
  const metrics = createPrometheusMetrics({ backend: 'gce', queue: 'builds' });
  metrics.observe({
    state: () => 'RUNNING',
    poolSize: () => 1,
    processors: () => ({ busy: 1, idle: 0, paused: 0 }),
    brokerConnected: () => true,
    brokerNodes: () => ({ jobs: 'amqp://rabbit-1.example.com:5672/' }),
    breakerOpen: () => false,
    readyJobs: async () => 3,
    warmPool: () => new Map([['image=travis-ci-focal machine=n2-standard-2', { idle: 1, booting: 0 }]]),
  });
  const requeued: JobResult = { outcome: 'requeued', cause: 'E_NO_CAPACITY', instanceReady: false };
  metrics.jobEnded(requeued);
  metrics.queueWait(1);
  metrics.timeToReceived(1);
  metrics.timeToStarted(1);
  metrics.bootPhase('create', 1);
  metrics.scriptRun(1);
  metrics.logPart(1);
  metrics.backend.apiCall('insert', 'throttled', 1);
  metrics.breakerOpened();
  metrics.brokerLost();
  metrics.reaped('orphaned');
  metrics.reaperFailed('list');
  metrics.warmPool.hit('image=travis-ci-focal machine=n2-standard-2');
  metrics.warmPool.miss('image=travis-ci-focal machine=n2-standard-2');
  metrics.warmPool.left('used', 1);
  metrics.warmPool.bootFailed('probe');
  const handle = metrics.handle;
  if (handle === undefined) throw new Error('metrics are off');
  const server = createServer(handle).listen(0, '127.0.0.1');
  try {
    await once(server, 'listening');
    const text = await (await fetch(`http://127.0.0.1:${(server.address() as AddressInfo).port}/metrics`)).text();
    const names = new Set<string>();
    for (const [, name, type] of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
      if (name === undefined) continue;
      if (type === 'histogram') for (const suffix of ['_bucket', '_sum', '_count']) names.add(`${name}${suffix}`);
      else names.add(name);
    }
    return names;
  } finally {
    server.close();
    await metrics.shutdown();
  }
}

/** The mayfly series a PromQL expression (or any text) names. */
const namesIn = (text: string): string[] => [...new Set(text.match(/\bmayfly_[a-z_]+/g) ?? [])];

interface Panel {
  title: string;
  targets?: { expr: string }[];
}

let exported: Set<string>;
let dashboard: { panels: Panel[] };
let work: string;

beforeAll(async () => {
  exported = await exportedNames();
  dashboard = JSON.parse(await readFile(DASHBOARD, 'utf8')) as { panels: Panel[] };
  work = await mkdtemp(join(tmpdir(), 'mayfly-deploy-'));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe('Prometheus alert rules', () => {
  it('pass promtool check rules and promtool test rules: each alert fires on its series and not on the others', async () => {
    const check = await runTool('promtool', ['check', 'rules', RULES]);
    expect([check.code, check.stdout]).toEqual([0, expect.stringContaining('SUCCESS: 6 rules found')]);
    const test = await runTool('promtool', ['test', 'rules', RULES_TEST]);
    expect([test.code, test.stdout + test.stderr]).toEqual([0, expect.stringContaining('SUCCESS')]);
  });

  it('name only metrics the worker exports', async () => {
    const named = namesIn(await readFile(RULES, 'utf8'));
    expect(named.length).toBeGreaterThan(0);
    expect(named.filter((name) => !exported.has(name))).toEqual([]);
  });
});

describe('Grafana dashboard', () => {
  it('queries only metrics the worker exports, in every panel', () => {
    expect(dashboard.panels.length).toBeGreaterThan(0);
    for (const panel of dashboard.panels) {
      const named = namesIn((panel.targets ?? []).map((target) => target.expr).join('\n'));
      expect([panel.title, named.length > 0, named.filter((name) => !exported.has(name))]).toEqual([panel.title, true, []]);
    }
  });

  it('has queries Prometheus parses (checked by promtool as recording rules)', async () => {
    // Grafana's variables, given what they stand for, so that the queries are plain PromQL.
    const exprs = dashboard.panels.flatMap((panel) => (panel.targets ?? []).map((target) => target.expr));
    const plain = exprs.map((expr) => expr.replaceAll('$__rate_interval', '5m').replaceAll('$instance', '.*'));
    const rules = ['groups:', '  - name: dashboard', '    rules:', ...plain.map((expr, i) => `      - record: dashboard:query_${i}\n        expr: ${JSON.stringify(expr)}`)];
    await writeFile(join(work, 'dashboard-queries.yml'), `${rules.join('\n')}\n`);
    const check = await runTool('promtool', ['check', 'rules', join(work, 'dashboard-queries.yml')]);
    expect([check.code, check.stderr]).toEqual([0, '']);
    expect(check.stdout).toContain(`SUCCESS: ${exprs.length} rules found`);
  });
});
