/**
 * The debug port (`TRAVIS_WORKER_PPROF_PORT`): profile a running worker
 * without restarting it. The pprof paths are Go's, so
 * `go tool pprof http://host:6060/debug/pprof/profile` works as it did for
 * the Go worker:
 *
 *   /debug/pprof/profile?seconds=N  CPU (wall-clock) profile, gzipped pprof protobuf (default 30 s)
 *   /debug/pprof/heap               sampled heap profile, gzipped pprof protobuf
 *   /debug/heapsnapshot             V8 heap snapshot (open in Chrome DevTools' Memory tab)
 *   /debug/report                   Node's diagnostic report without the environment
 *                                   and command line: JS stack, native stack, libuv
 *                                   handles (sockets, timers) and active resources
 *   /metrics                        Prometheus text
 *
 * Profiles come from @datadog/pprof (Datadog's maintained fork of Google's
 * node pprof), whose encoder writes the gzipped protobuf Go's tooling reads.
 *
 * Every route asks for `TRAVIS_WORKER_REMOTE_CONTROLLER_AUTH`, on loopback
 * too, unlike Go's net/http/pprof: every process on the host can reach
 * loopback, a job of the local or ssh backend among them. `go tool pprof
 * http://user:password@host:port/debug/pprof/profile` sends them. Without
 * credentials the port is served only on loopback and only when the
 * operator opted in (`TRAVIS_WORKER_PPROF_NO_AUTH`); the heap snapshot,
 * which holds every string in the worker's memory (secrets included), is
 * then refused. A CPU profile and a heap snapshot are each taken one at a
 * time.
 */
import { getHeapSnapshot } from 'node:v8';
import { pipeline } from 'node:stream/promises';
import { encode, heap, time } from '@datadog/pprof';
import { isLoopback } from '../util/net.js';
import { errorMessage } from '../errors.js';
import type { Logger } from '../logger.js';
import { HttpError, intParam, listen, sendJson, sendText, type Handler, type HttpListener, type Route, type RouteContext } from '../control/http.js';

/** Go's default profile length. */
const DEFAULT_PROFILE_SECONDS = 30;
/** Longer profiles are refused: a forgotten `seconds=86400` would pin the profiler for a day. */
const MAX_PROFILE_SECONDS = 600;
/** 100 samples a second, Go's rate: enough detail, negligible overhead. */
const PROFILE_INTERVAL_MICROS = 10_000;
/** One heap sample per 512 KiB allocated on average (Go's default rate), 64 frames deep. */
const HEAP_SAMPLE_INTERVAL_BYTES = 512 * 1024;
const HEAP_STACK_DEPTH = 64;

let heapSamplerUsers = 0;

/** Start V8's sampling heap profiler (shared by every debug server in the process); returns its release. */
function startHeapSampler(): () => void {
  if (heapSamplerUsers++ === 0) heap.start(HEAP_SAMPLE_INTERVAL_BYTES, HEAP_STACK_DEPTH);
  let released = false;
  return () => {
    if (released) return;
    released = true;
    if (--heapSamplerUsers === 0) heap.stop();
  };
}

export interface DebugServerOptions {
  host: string;
  port: number;
  /** `user:password`, asked for on every route; undefined only with `noAuth` on loopback. */
  auth: string | undefined;
  /** Serve without credentials when `auth` is undefined (`TRAVIS_WORKER_PPROF_NO_AUTH`): loopback only. */
  noAuth: boolean;
  metrics: ((request: RouteContext['request'], response: RouteContext['response']) => void) | undefined;
  logger: Logger;
}

export type DebugServer = HttpListener;

function sendProfile(response: RouteContext['response'], body: Buffer, name: string): void {
  response.writeHead(200, {
    'content-type': 'application/octet-stream',
    'content-disposition': `attachment; filename="${name}"`,
    'content-length': body.byteLength,
  });
  response.end(body);
}

/**
 * `handler`, one request at a time; another one meanwhile gets 429. V8 has
 * one CPU profiler per isolate, and each heap snapshot keeps its own copy of
 * the heap until the client has read it all (20 slow readers took a worker
 * from 220 to 510 MB of RSS and its /healthz to 4 s).
 */
function oneAtATime(what: string, handler: Handler): Handler {
  let busy = false;
  return async (context) => {
    if (busy) throw new HttpError(429, `${what} is already being taken; try again when it is done`);
    busy = true;
    try {
      await handler(context);
    } finally {
      busy = false;
    }
  };
}

/** Parts of Node's diagnostic report that are safe to hand out; anything a later Node adds stays out until vetted. */
const REPORT_SECTIONS = ['header', 'javascriptStack', 'javascriptHeap', 'nativeStack', 'resourceUsage', 'uvthreadResourceUsage', 'libuv', 'userLimits', 'sharedObjects', 'workers'];

/**
 * Node's diagnostic report without what may carry a secret: the process
 * environment (broker and control passwords, cloud keys, the build API
 * token) and the command line. Worker threads' reports nest inside, redacted
 * the same way.
 */
function redactedReport(report: object): Record<string, unknown> {
  const source = report as Record<string, unknown>;
  const kept: Record<string, unknown> = {};
  for (const section of REPORT_SECTIONS) {
    if (section in source) kept[section] = source[section];
  }
  if (typeof kept.header === 'object' && kept.header !== null) {
    const header = { ...(kept.header as Record<string, unknown>) };
    delete header.commandLine;
    kept.header = header;
  }
  if (Array.isArray(kept.workers)) kept.workers = kept.workers.map((worker: object) => redactedReport(worker));
  return kept;
}

/** Wait `ms`, ending early when `signal` aborts. */
function waitFor(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}

/** The profiler's routes (every one behind auth) and what releases them. */
export interface ProfilerRoutes {
  routes: Route[];
  /** End a profile in progress and stop the heap sampler (when the listener serving the routes closes). */
  release(): void;
}

/**
 * The profiling routes under `/debug/`, for the debug port and for the
 * control API (which serves them where travis-ci/worker serves Go's pprof,
 * behind the controller's auth). `auth` is the listener's credentials: the
 * heap snapshot is refused on a listener without them.
 */
export function profilerRoutes(auth: string | undefined, logger: Logger): ProfilerRoutes {
  const releaseHeap = startHeapSampler();
  /** Aborted on release, so a profile in progress ends instead of holding the process. */
  const closing = new AbortController();

  const routes: Route[] = [
    {
      method: 'GET',
      path: '/debug/pprof/',
      auth: true,
      handler: ({ response }) =>
        sendText(response, 200, ['profile?seconds=N  CPU (wall) profile', 'heap  heap profile', '', '/debug/heapsnapshot', '/debug/report', '/metrics', ''].join('\n')),
    },
    {
      method: 'GET',
      path: '/debug/pprof/profile',
      auth: true,
      handler: oneAtATime('a CPU profile', async ({ response, url }) => {
        const seconds = intParam(url, 'seconds', DEFAULT_PROFILE_SECONDS, MAX_PROFILE_SECONDS);
        const gone = new AbortController();
        const onClose = (): void => gone.abort();
        response.once('close', onClose);
        try {
          logger.info({ seconds }, 'taking a CPU profile');
          time.start({ durationMillis: seconds * 1000, intervalMicros: PROFILE_INTERVAL_MICROS });
          await waitFor(seconds * 1000, AbortSignal.any([gone.signal, closing.signal]));
          const profile = time.stop();
          if (gone.signal.aborted) return;
          sendProfile(response, await encode(profile), 'profile.pb.gz');
        } finally {
          response.off('close', onClose);
        }
      }),
    },
    {
      method: 'GET',
      path: '/debug/pprof/heap',
      auth: true,
      handler: async ({ response }) => sendProfile(response, await encode(heap.profile()), 'heap.pb.gz'),
    },
    {
      method: 'GET',
      path: '/debug/heapsnapshot',
      auth: true,
      handler: oneAtATime('a heap snapshot', async ({ response }) => {
        if (auth === undefined) {
          throw new HttpError(403, 'the heap snapshot holds every string in memory, secrets included: set TRAVIS_WORKER_REMOTE_CONTROLLER_AUTH to take one');
        }
        logger.info('writing a heap snapshot (the worker pauses while V8 walks the heap)');
        response.writeHead(200, {
          'content-type': 'application/json',
          'content-disposition': `attachment; filename="mayfly-${process.pid}-${Date.now()}.heapsnapshot"`,
        });
        await pipeline(getHeapSnapshot(), response);
      }),
    },
    {
      method: 'GET',
      path: '/debug/report',
      auth: true,
      handler: ({ response }) =>
        sendJson(response, 200, {
          activeResources: process.getActiveResourcesInfo(),
          report: redactedReport(process.report.getReport()),
        }),
    },
  ];
  return {
    routes,
    release() {
      closing.abort();
      releaseHeap();
    },
  };
}

export async function startDebugServer(options: DebugServerOptions): Promise<DebugServer> {
  // Loading the config refuses these first, with the variables to set; this is the last line.
  if (options.auth === undefined && !(options.noAuth && isLoopback(options.host))) {
    throw new Error(`the debug port on ${options.host} needs credentials (TRAVIS_WORKER_REMOTE_CONTROLLER_AUTH)`);
  }
  const logger = options.logger.child({ listener: 'debug' });
  const profiler = profilerRoutes(options.auth, logger);
  const routes = [...profiler.routes];
  if (options.metrics) {
    const metrics = options.metrics;
    routes.push({ method: 'GET', path: '/metrics', auth: true, handler: ({ request, response }) => metrics(request, response) });
  }

  let listener: HttpListener;
  try {
    listener = await listen(options.host, options.port, {
      name: 'debug',
      routes,
      auth: options.auth,
      enforceAuth: options.auth !== undefined,
      logger,
    });
  } catch (err) {
    profiler.release();
    throw err;
  }
  logger.info({ pprof: `${listener.url}/debug/pprof/profile` }, 'profiler ready (go tool pprof <url>)');
  return {
    url: listener.url,
    address: listener.address,
    async close() {
      // First: a profile in progress ends instead of holding the close up.
      profiler.release();
      await listener.close().catch((err: unknown) => logger.warn({ err: errorMessage(err) }, 'closing the debug listener failed'));
    },
  };
}
