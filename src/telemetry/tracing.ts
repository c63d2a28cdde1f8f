/**
 * Traces: one per job, a span per step (see run-job.ts), exported over OTLP
 * when `OTEL_EXPORTER_OTLP_ENDPOINT` is set. The SDK is loaded only then
 * (a dynamic import): with tracing off the job pipeline gets a no-op tracer
 * and no SDK module is even loaded.
 *
 * When on, `@opentelemetry/sdk-node` configures the exporter from the
 * standard OTEL_* variables (endpoint, `OTEL_EXPORTER_OTLP_HEADERS` for
 * Honeycomb's key, protocol, sampler), which is what an operator who knows
 * OpenTelemetry expects; mayfly itself only decides whether to start it.
 * Metrics go over OTLP through their own provider (src/telemetry/metrics.ts); logs do not.
 */
import { ProxyTracerProvider, trace, type Tracer } from '@opentelemetry/api';
import { errorMessage } from '../errors.js';
import type { Logger } from '../logger.js';
import { VERSION } from '../version.js';

export interface Tracing {
  readonly tracer: Tracer;
  /** True when spans go anywhere. */
  readonly enabled: boolean;
  /** Flush what is buffered and stop; never throws. */
  shutdown(): Promise<void>;
}

/** A tracer whose spans are dropped at creation (the API's no-op). */
export const noopTracer: Tracer = new ProxyTracerProvider().getTracer('mayfly');

export const tracingOff: Tracing = { tracer: noopTracer, enabled: false, shutdown: async () => {} };

/** Start the OTLP trace pipeline if `otlpEndpoint` is set; else `tracingOff`. */
export async function startTracing(otlpEndpoint: string | undefined, logger: Logger): Promise<Tracing> {
  if (otlpEndpoint === undefined) return tracingOff;
  const { NodeSDK } = await import('@opentelemetry/sdk-node');
  const sdk = new NodeSDK({
    serviceName: 'mayfly',
    instrumentations: [],
    // Metrics have their own provider (metrics.ts); OTel logs are not used (the worker log is stdout).
    metricReaders: [],
    logRecordProcessors: [],
  });
  sdk.start();
  logger.info({ otlp_endpoint: otlpEndpoint }, 'tracing: a trace per job is exported over OTLP');
  return {
    tracer: trace.getTracer('mayfly', VERSION),
    enabled: true,
    async shutdown() {
      await sdk.shutdown().catch((err: unknown) => logger.warn({ err: errorMessage(err) }, 'flushing traces failed'));
    },
  };
}
