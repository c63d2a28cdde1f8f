/**
 * The control API on `TRAVIS_WORKER_REMOTE_CONTROLLER_ADDR`, with
 * travis-ci/worker's routes (remote_controller.go) and answers:
 *
 *   GET    /healthz          200 "OK" while the process serves (no auth)
 *   GET    /ready            200 "OK" while taking jobs; 503 "Not Ready" while
 *                            starting, paused, draining or without a broker, and
 *                            "Not Ready: <why>" while the circuit breaker holds
 *                            jobs back (no auth)
 *   GET    /worker           JSON status
 *   PATCH  /worker           {"poolSize": n, "paused": bool}: resize (0: no change),
 *                            pause/resume (204)
 *   DELETE /worker           {"graceful": bool, "pause": bool}: drain (graceful),
 *                            pause (graceful + pause), or stop now (204)
 *   POST   /pool/increment   one more processor (204)
 *   POST   /pool/decrement   one processor fewer: it finishes its job first (204)
 *   GET    /metrics          Prometheus text
 *   GET    /debug/...        the profiler (src/debug/server.ts), where travis serves
 *                            Go's pprof, but behind the same auth as the rest
 *
 * A request the worker's state forbids (pausing while draining, resizing a
 * stopping pool) answers 409 with the reason.
 */
import { z } from 'zod';
import type { Logger } from '../logger.js';
import { LifecycleError } from '../lifecycle/state.js';
import type { WorkerStatus } from '../lifecycle/status.js';
import { MAX_POOL_SIZE } from '../pool.js';
import { profilerRoutes } from '../debug/server.js';
import { HttpError, jsonBody, listen, sendJson, sendText, type HttpListener, type Route, type RouteContext } from './http.js';

/** `/ready`'s header naming the broker node of each connection: `jobs=<uri>, logs=<uri>`, passwords masked. */
export const BROKER_NODES_HEADER = 'mayfly-broker-nodes';

/** What the control API (and the signal handlers) can do to a worker. */
export interface WorkerControl {
  status(): WorkerStatus;
  /** Taking jobs: running (not paused, draining or stopping), with a broker and at least one processor. */
  ready(): boolean;
  /** Why the worker is not ready, when there is more to say than its state (the broker is away, the circuit breaker is open). */
  notReadyReason(): string | undefined;
  /** The broker node each connection uses now, by role, URIs with passwords masked (none without a broker). */
  brokerNodes(): Readonly<Record<string, string>>;
  pause(): void;
  resume(): void;
  resize(size: number): Promise<void>;
  increment(): Promise<void>;
  decrement(): void;
  /** Stop taking jobs; running ones get `TRAVIS_WORKER_SHUTDOWN_TIMEOUT`, then the worker exits. */
  drain(reason: string): void;
  /** Requeue running jobs and exit now. */
  stop(reason: string): void;
}

/**
 * PATCH /worker. travis decodes this into its whole status object, so a
 * GET answer sent back is accepted: unknown fields are ignored. A
 * `poolSize` of 0 is travis' "no size given" (Go's zero value): it changes
 * nothing.
 */
const PatchWorker = z.object({
  poolSize: z.number().int().min(0).max(MAX_POOL_SIZE).optional(),
  paused: z.boolean().optional(),
});

const DeleteWorker = z.object({
  graceful: z.boolean().optional(),
  pause: z.boolean().optional(),
});

export interface ControlServerOptions {
  host: string;
  port: number;
  /** `user:password`; without it only /healthz and /ready answer (403 elsewhere). */
  auth: string | undefined;
  worker: WorkerControl;
  /** Prometheus scrape handler, if metrics are on. */
  metrics: ((request: RouteContext['request'], response: RouteContext['response']) => void) | undefined;
  logger: Logger;
}

/** Run a state-changing action; a lifecycle refusal (the pool at its maximum size included) becomes 409. */
async function act(action: () => Promise<void> | void): Promise<void> {
  try {
    await action();
  } catch (err) {
    if (err instanceof LifecycleError) throw new HttpError(409, err.message);
    throw err;
  }
}

function noContent({ response }: RouteContext): void {
  response.writeHead(204);
  response.end();
}

export function controlRoutes(worker: WorkerControl, metrics: ControlServerOptions['metrics'], logger: Logger): Route[] {
  const routes: Route[] = [
    { method: 'GET', path: '/healthz', auth: false, handler: ({ response }) => sendText(response, 200, 'OK') },
    {
      method: 'GET',
      path: '/ready',
      auth: false,
      handler: ({ response }) => {
        // The body stays travis' "OK" for probes that compare it; which nodes serve is a header.
        const nodes = Object.entries(worker.brokerNodes()).map(([role, node]) => `${role}=${node}`);
        if (nodes.length > 0) response.setHeader(BROKER_NODES_HEADER, nodes.join(', '));
        if (worker.ready()) return sendText(response, 200, 'OK');
        const reason = worker.notReadyReason();
        return sendText(response, 503, reason === undefined ? 'Not Ready' : `Not Ready: ${reason}`);
      },
    },
    { method: 'GET', path: '/worker', auth: true, handler: ({ response }) => sendJson(response, 200, worker.status()) },
    {
      method: 'PATCH',
      path: '/worker',
      auth: true,
      async handler(context) {
        const body = await jsonBody(context.request, PatchWorker);
        await act(async () => {
          if (body.paused === true) worker.pause();
          if (body.poolSize) await worker.resize(body.poolSize);
          if (body.paused === false) worker.resume();
        });
        logger.info({ ...body }, 'control API: worker updated');
        noContent(context);
      },
    },
    {
      method: 'DELETE',
      path: '/worker',
      auth: true,
      async handler(context) {
        const body = await jsonBody(context.request, DeleteWorker);
        logger.info({ graceful: body.graceful ?? false, pause: body.pause ?? false }, 'control API: asked the worker to shut down');
        await act(() => {
          if (body.graceful === true && body.pause === true) worker.pause();
          else if (body.graceful === true) worker.drain('control API');
          else worker.stop('control API');
        });
        noContent(context);
      },
    },
    {
      method: 'POST',
      path: '/pool/increment',
      auth: true,
      async handler(context) {
        await act(() => worker.increment());
        noContent(context);
      },
    },
    {
      method: 'POST',
      path: '/pool/decrement',
      auth: true,
      async handler(context) {
        await act(() => worker.decrement());
        noContent(context);
      },
    },
  ];
  if (metrics) routes.push({ method: 'GET', path: '/metrics', auth: true, handler: ({ request, response }) => metrics(request, response) });
  return routes;
}

/** Start the control API. */
export async function startControlServer(options: ControlServerOptions): Promise<HttpListener> {
  if (options.auth === undefined) {
    options.logger.warn('TRAVIS_WORKER_REMOTE_CONTROLLER_AUTH is not set: the control API answers only /healthz and /ready');
  }
  const profiler = profilerRoutes(options.auth, options.logger.child({ listener: 'control' }));
  let listener: HttpListener;
  try {
    listener = await listen(options.host, options.port, {
      name: 'control',
      routes: [...controlRoutes(options.worker, options.metrics, options.logger), ...profiler.routes],
      auth: options.auth,
      enforceAuth: true,
      logger: options.logger,
    });
  } catch (err) {
    profiler.release();
    throw err;
  }
  return {
    url: listener.url,
    address: listener.address,
    async close() {
      // First: a profile in progress ends instead of holding the close up.
      profiler.release();
      await listener.close();
    },
  };
}
