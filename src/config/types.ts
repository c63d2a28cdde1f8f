/**
 * The worker's configuration as the engine reads it: what the core schema
 * (schema.ts, shaped like `WorkerConfig`) loads into, plus what the loader
 * (load.ts) adds. Durations are `...Ms` numbers.
 */
import type { BackendDefinition } from '../backend/contract.js';
import type { ListenConfig } from '../util/net.js';

export type { ListenConfig } from '../util/net.js';

/** Settings of the build API request (docs/protocol.md, "The build API"). */
export interface BuildApiConfig {
  /** `TRAVIS_WORKER_BUILD_API_URI`; undefined = use the built-in script generator. */
  uri?: string;
  insecureSkipVerify: boolean;
  /** Total time for fetching one script, retries included (`TRAVIS_WORKER_BUILD_API_TIMEOUT`). */
  timeoutMs: number;
  /** Worker-side settings merged into the payload sent to the build API. */
  options: {
    aptCache?: string;
    npmCache?: string;
    paranoid: boolean;
    fixResolvConf: boolean;
    fixEtcHosts: boolean;
    cacheType?: string;
    cacheFetchTimeoutS: number;
    cachePushTimeoutS: number;
    cacheS3: {
      scheme?: string;
      region?: string;
      bucket?: string;
      accessKeyId?: string;
      secretAccessKey?: string;
    };
  };
}

export interface AmqpConfig {
  /** One broker URI, or the nodes of a cluster comma-separated (`listedUrls` splits them). */
  uri: string;
  /** A separate broker (connection) for log parts, one or several URIs like `uri`; undefined = same as `uri`. */
  logsUri?: string;
  heartbeatMs: number;
  consumerPriority: number;
  /** PEM text of a CA/cert to trust for the jobs broker (from `AMQP_TLS_CERT` or the file at `AMQP_TLS_CERT_PATH`). */
  tlsCert?: string;
  logsTlsCert?: string;
  insecure: boolean;
  /** Publish log parts to `reporting.jobs.logs_sharded` (x-modulus-hash). */
  sharding: boolean;
  /** Delays between attempts to reconnect a lost broker connection (`AMQP_RECONNECT_BACKOFF`, `AMQP_RECONNECT_MAX_BACKOFF`). */
  reconnect: { initialMs: number; maxMs: number };
  /** `TRAVIS_WORKER_LOG_DELIVERY_TIMEOUT`: longest a log part or state update may go unconfirmed, retries included, before its job is requeued. */
  logDeliveryTimeoutMs: number;
  /** The type of the queues mayfly declares (existing ones are used as they are). */
  queueType: 'classic' | 'quorum';
  /** `x-delivery-limit` of a quorum job queue mayfly declares. */
  deliveryLimit: number;
}

export interface FileQueueConfig {
  baseDir: string;
  pollingIntervalMs: number;
  /** Also print each job's log to the worker's own output (handy on the embedded defaults). */
  echoLogs: boolean;
}

/** Everything the worker reads, loaded once: durations are `...Ms` numbers. */
export interface WorkerConfig {
  providerName: string;
  queueType: 'amqp' | 'file';
  queueName: string;
  poolSize: number;
  hostname: string;
  /** `TRAVIS_WORKER_INFRA`, sent in the first log part's meta. */
  infra: string;
  /** `TRAVIS_WORKER_PROGRESS_TYPE`: `text` writes the backend's progress into the job log, in a fold. */
  progressType: '' | 'text';
  /** `TRAVIS_WORKER_PAYLOAD_FILTER_EXECUTABLE`: the payload goes through it before the build API; undefined: not filtered. */
  payloadFilterExecutable?: string;
  amqp: AmqpConfig;
  file: FileQueueConfig;
  buildApi: BuildApiConfig;
  timeouts: {
    hardMs: number;
    logSilenceMs: number;
    startupMs: number;
    scriptUploadMs: number;
    initialSleepMs: number;
    /**
     * `TRAVIS_WORKER_SHUTDOWN_TIMEOUT`: how long a drain (SIGTERM, SIGINT,
     * `DELETE /worker`, heartbeat `down`) lets running jobs go on before
     * they are requeued, in ms.
     */
    shutdownMs: number;
  };
  /** Bytes of log a job may write before it is stopped. */
  maxLogLength: number;
  /** Payloads larger than this many bytes are rejected unread. */
  payloadMaxBytes: number;
  defaults: { language: string; dist: string; arch: string; group: string; os: string };
  logLevel: 'debug' | 'info';
  /** Validated settings of the selected backend (`TRAVIS_WORKER_<PROVIDER>_*`). */
  backendSettings: Record<string, unknown>;
  /** `TRAVIS_WORKER_STRICT_CONFIG`: an unknown `TRAVIS_WORKER_*` variable stops startup instead of being warned about. */
  strictConfig: boolean;
  /** What was set but has no effect (src/config/known.ts); main logs each once. */
  warnings: ConfigWarning[];
  /** The control API (`TRAVIS_WORKER_REMOTE_CONTROLLER_ADDR`); undefined = not served. */
  control?: ListenConfig;
  /**
   * `user:password` for basic auth (`TRAVIS_WORKER_REMOTE_CONTROLLER_AUTH`) on
   * the control API and on the debug port, wherever they listen; undefined =
   * the control API answers only /healthz and /ready.
   */
  remoteAuth?: string;
  /** The debug (profiler) port (`TRAVIS_WORKER_PPROF_PORT`, `_PPROF_ADDR`); undefined = not served. Port 0 = any free port. */
  debug?: DebugListenConfig;
  /** Commands run before taking jobs and before exiting (`TRAVIS_WORKER_START_HOOK`, `_STOP_HOOK`): split on spaces, no shell. */
  hooks: { start?: string; stop?: string };
  /** `TRAVIS_WORKER_HEARTBEAT_URL` and its token (read from the file when given as `file://path`). */
  heartbeat?: { url: string; authToken?: string };
  /** OpenTelemetry: traces go over OTLP only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set. */
  telemetry: { otlpEndpoint?: string };
  /** The circuit breaker against requeue storms (src/backend/breaker.ts). */
  breaker: {
    /** `TRAVIS_WORKER_BREAKER_THRESHOLD`: start failures in a row that stop the worker taking jobs; 0 = off. */
    threshold: number;
    /** `TRAVIS_WORKER_BREAKER_BACKOFF`: the first pause, in ms; it doubles on each further opening. */
    backoffMs: number;
    /** `TRAVIS_WORKER_BREAKER_MAX_BACKOFF`: the longest pause, in ms. */
    maxBackoffMs: number;
  };
  /** `TRAVIS_WORKER_REQUEUE_LIMIT`: requeues of the same job in a row before it is errored instead; 0 = no limit. */
  requeueLimit: number;
  /** The orphan reaper (src/reaper/). */
  reaper: {
    /** `TRAVIS_WORKER_REAPER_INTERVAL`: between passes, in ms; 0 = off. */
    intervalMs: number;
    /** `TRAVIS_WORKER_REAPER_GRACE`: an unclaimed instance of this worker younger than this is left alone, in ms. */
    graceMs: number;
  };
  /** The host in its cloud: the notices it hears and the lifecycle step it completes (src/fleet/). */
  host: {
    /** `TRAVIS_WORKER_HOST_CLOUD`: whose metadata service to watch for notices; `none` never probes one. */
    cloud: HostCloud;
    /** `TRAVIS_WORKER_HOST_NOTICE_MARGIN`: kept free before a notice's deadline to requeue jobs and destroy their instances, in ms. */
    noticeMarginMs: number;
    /** `TRAVIS_WORKER_HOST_NOTICE_POLL_INTERVAL`: between two reads of EC2's notices, and before retrying a failed read on either cloud, in ms. */
    noticePollMs: number;
    /** `TRAVIS_WORKER_ASG_LIFECYCLE_HOOK`: the termination hook this host completes itself after draining; unset: none. */
    asgLifecycleHook?: string;
    /** `TRAVIS_WORKER_ASG_LIFECYCLE_HEARTBEAT_INTERVAL`: between two RecordLifecycleActionHeartbeat calls while jobs finish, in ms. */
    asgHeartbeatMs: number;
  };
  /** When the host drains and exits by itself (src/fleet/lifetime.ts); every limit 0 = none. */
  lifetime: LifetimeConfig;
  /** The warm pool (src/warm-pool/, docs/warm-pool.md). */
  warmPool: {
    /** `TRAVIS_WORKER_WARM_POOL_SIZE`: most instances idle and booting at once; 0 = off. */
    size: number;
    /** `TRAVIS_WORKER_WARM_POOL_MODE`: `fixed` (always `size`) or `adaptive` (as recent jobs ask). */
    mode: 'fixed' | 'adaptive';
    /** `TRAVIS_WORKER_WARM_POOL_MAX_AGE`: an idle instance this old (since its boot began) is replaced, in ms. */
    maxAgeMs: number;
    /** `TRAVIS_WORKER_WARM_POOL_WINDOW`: adaptive mode, how long a job counts towards its shape's demand, in ms. */
    windowMs: number;
  };
}

/** The host's lifetime policy: each limit, once reached, drains the worker and exits. */
export interface LifetimeConfig {
  /** `TRAVIS_WORKER_IDLE_SHUTDOWN_AFTER`: ms with no job running; 0 = never. */
  idleShutdownAfterMs: number;
  /** `TRAVIS_WORKER_MAX_JOBS`: jobs taken in all; 0 = no limit. */
  maxJobs: number;
  /** `TRAVIS_WORKER_MAX_UPTIME`: ms since the worker started; 0 = no limit. */
  maxUptimeMs: number;
  /** `TRAVIS_WORKER_HOST_TERMINATE`: after such a drain, remove this host from its autoscaled group. */
  hostTerminate: boolean;
  /** `TRAVIS_WORKER_HOST_GCE_API_ENDPOINT`: the Compute API a GCE host leaves its group through; undefined = Google's. */
  gceApiEndpoint?: string;
}

/** The cloud a worker host runs in, as far as its notices go. */
export type HostCloud = 'aws' | 'gce' | 'none';

/** A warning about settings that were set but have no effect. */
export interface ConfigWarning {
  /** The variables (or flags) it is about, as they were set. */
  variables: string[];
  /** A sentence naming them and saying why they have no effect. */
  message: string;
}

/** Where the debug port binds, and whether it may go without credentials. */
export interface DebugListenConfig extends ListenConfig {
  /**
   * `TRAVIS_WORKER_PPROF_NO_AUTH`: serve it without credentials when
   * `remoteAuth` is unset (loading allows that on loopback only). Credentials,
   * when set, are always asked for.
   */
  noAuth: boolean;
}

/** A backend of any settings type: the loader sees only its schema. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- each backend's settings type differs
export type AnyBackendDefinition = BackendDefinition<any>;
