/**
 * With `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans leave the process over
 * OTLP/HTTP (protobuf, the SDK's default) to `<endpoint>/v1/traces`; without
 * it, no SDK starts and spans go nowhere. Metrics made with `otlp` go to
 * `<endpoint>/v1/metrics` the same way. The collector is a local HTTP server.
 */
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/logger.js';
import { createPrometheusMetrics } from '../../src/telemetry/metrics.js';
import { startTracing, tracingOff } from '../../src/telemetry/tracing.js';

interface Received {
  url: string;
  contentType: string | undefined;
  body: Buffer;
}

let collector: Server;
let endpoint: string;
const received: Received[] = [];
let savedEndpoint: string | undefined;

async function readBody(request: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of request) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

beforeAll(async () => {
  collector = createServer((request, response) => {
    void readBody(request).then((body) => {
      received.push({ url: request.url ?? '', contentType: request.headers['content-type'], body });
      response.writeHead(200, { 'content-type': 'application/x-protobuf' });
      response.end();
    });
  });
  collector.listen(0, '127.0.0.1');
  await once(collector, 'listening');
  endpoint = `http://127.0.0.1:${(collector.address() as AddressInfo).port}`;
  // The SDK reads the standard variable itself (as an operator's OTEL_* settings must apply); this file runs in its own process.
  savedEndpoint = process.env.OTEL_EXPORTER_OTLP_ENDPOINT;
  process.env.OTEL_EXPORTER_OTLP_ENDPOINT = endpoint;
});

afterAll(async () => {
  if (savedEndpoint === undefined) delete process.env.OTEL_EXPORTER_OTLP_ENDPOINT;
  else process.env.OTEL_EXPORTER_OTLP_ENDPOINT = savedEndpoint;
  collector.closeAllConnections();
  collector.close();
});

describe('tracing', () => {
  it('is off without an endpoint', async () => {
    const tracing = await startTracing(undefined, silentLogger);
    expect(tracing).toBe(tracingOff);
    const span = tracing.tracer.startSpan('nothing');
    expect(span.isRecording()).toBe(false);
    span.end();
  });

  it('exports spans over OTLP/HTTP to the endpoint', async () => {
    const tracing = await startTracing(endpoint, silentLogger);
    expect(tracing.enabled).toBe(true);
    const span = tracing.tracer.startSpan('job', { attributes: { 'job.id': 4242 } });
    expect(span.isRecording()).toBe(true);
    span.end();
    await tracing.shutdown();
    const traces = received.filter((request) => request.url === '/v1/traces');
    expect(traces).toHaveLength(1);
    expect(traces[0]?.contentType).toBe('application/x-protobuf');
    const body = traces[0]?.body.toString('latin1') ?? '';
    expect(body).toContain('job.id');
    expect(body).toContain('mayfly');
  });
});

describe('metrics over OTLP', () => {
  it('pushes the gauges, the demand for an autoscaler included, to the endpoint (at the latest on shutdown)', async () => {
    const metrics = createPrometheusMetrics({ backend: 'gce', queue: 'amqp' }, { otlp: true });
    metrics.observe({
      state: () => 'RUNNING',
      poolSize: () => 4,
      processors: () => ({ busy: 3, idle: 1, paused: 0 }),
      brokerConnected: () => true,
      brokerNodes: () => ({}),
      breakerOpen: () => false,
      readyJobs: async () => 17,
    });
    await metrics.shutdown();
    const pushed = received.filter((request) => request.url === '/v1/metrics');
    expect(pushed).toHaveLength(1);
    expect(pushed[0]?.contentType).toBe('application/x-protobuf');
    const body = pushed[0]?.body.toString('latin1') ?? '';
    for (const name of ['mayfly_queue_ready_jobs', 'mayfly_processors', 'mayfly_pool_size']) expect(body).toContain(name);
  });

  it('pushes nothing without otlp', async () => {
    const before = received.length;
    const metrics = createPrometheusMetrics({ backend: 'gce', queue: 'amqp' });
    metrics.jobEnded({ outcome: 'finished', state: 'passed' });
    await metrics.shutdown();
    expect(received.slice(before).filter((request) => request.url === '/v1/metrics')).toEqual([]);
  });
});
