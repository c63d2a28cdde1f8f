/**
 * The worker's configuration: the only module that reads `process.env`.
 *
 * Every setting is a `TRAVIS_WORKER_*` variable with the name and default
 * travis-ci/worker v6 gives it (config/config.go), so an operator's
 * /etc/default file keeps working, except where mayfly's embedded defaults
 * differ on purpose (no broker, no cloud: `PROVIDER_NAME=local`,
 * `QUEUE_TYPE=file`). Settings of the selected backend are
 * `TRAVIS_WORKER_<BACKEND>_<KEY>`, declared by the backend's own schema.
 *
 * Loading is strict: an unknown `TRAVIS_WORKER_*` variable (a typo), a bad
 * value or a missing required setting stops startup with a `ConfigError`
 * naming every offending variable. Settings travis reads but mayfly has no
 * use for are accepted and listed in `ignoredSettings` for a warning.
 */
import { readFileSync } from 'node:fs';
import { hostname as osHostname } from 'node:os';
import convict from 'convict';
import type { BackendDefinition, SettingFamily } from './backend/contract.js';
import { ConfigError, errorMessage } from './errors.js';
import { DEFAULT_MAX_PAYLOAD_BYTES } from './job/payload.js';
import { DEFAULT_REQUEUE_LIMIT } from './job/requeues.js';
import { LOG_TRAILER_RESERVE_BYTES } from './job-log/writer.js';
import { MAX_POOL_SIZE } from './pool.js';
import { parseGoDuration } from './settings.js';
import { MASK } from './redact.js';
import {
  ENV_PREFIX,
  backendEnvName,
  familyEnvPrefix,
  closestName,
  exportLine,
  formatSettingValue,
  isRequired,
  isUrlSetting,
  parseEnvText,
  schemaLeaves,
  type SettingLeaf,
} from './settings-env.js';

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
  uri: string;
  /** A separate broker (connection) for log parts; undefined = same as `uri`. */
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
}

export interface FileQueueConfig {
  baseDir: string;
  pollingIntervalMs: number;
  /** Also print each job's log to the worker's own output (handy on the embedded defaults). */
  echoLogs: boolean;
}

/** Everything the worker reads, compiled once: durations are `...Ms` numbers. */
export interface WorkerConfig {
  providerName: string;
  queueType: 'amqp' | 'file';
  queueName: string;
  poolSize: number;
  hostname: string;
  /** `TRAVIS_WORKER_INFRA`, sent in the first log part's meta. */
  infra: string;
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
  /**
   * travis-ci/worker variables that were set but that mayfly does not use
   * (`IGNORED_SETTINGS`), sorted; main warns about them.
   */
  ignoredSettings: string[];
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
}

/** Where an HTTP listener binds. */
export interface ListenConfig {
  /** An IP address or host name; 127.0.0.1 unless configured. */
  host: string;
  /** TCP port; 0 picks a free one (tests). */
  port: number;
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

/** Loopback addresses: listeners there are reachable from this host only (every process on it: jobs of the local and ssh backends, containers on the host network). */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/**
 * `host:port`, `:port` or `[v6]:port`, as Go's net.Listen takes it; a
 * missing host means 127.0.0.1 (Go would listen on every interface: write
 * `0.0.0.0:8080` for that).
 */
export function parseListenAddress(text: string): ListenConfig {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s]*)):(\d{1,5})$/.exec(text.trim());
  const port = Number(match?.[3]);
  if (!match || port > 65535) throw new Error('must be host:port, e.g. 127.0.0.1:8080 (or :8080 for 127.0.0.1)');
  const host = match[1] ?? match[2] ?? '';
  return { host: host === '' ? '127.0.0.1' : host, port };
}

/** The text of a listen address as an operator writes it. */
function formatListenAddress({ host, port }: ListenConfig): string {
  return `${host.includes(':') ? `[${host}]` : host}:${port}`;
}

/** A backend of any settings type: the loader sees only its schema. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- each backend's settings type differs
export type AnyBackendDefinition = BackendDefinition<any>;

/** One core setting: a convict declaration that always names its variable and says what it is for. */
export type CoreSettingSchema<T> = convict.SchemaObj<T> & { env: string; doc: string };

function text(env: string, defaultValue: string, doc: string, sensitive = false): CoreSettingSchema<string> {
  return { env, doc, format: String, default: defaultValue, ...(sensitive ? { sensitive } : {}) };
}

function flag(env: string, doc: string, defaultValue = false): CoreSettingSchema<boolean> {
  return { env, doc, format: Boolean, default: defaultValue };
}

/** A Go duration (`3m30s`); the value is milliseconds. */
function duration(env: string, goDefault: string, doc: string): CoreSettingSchema<number> {
  return { env, doc, format: 'duration', default: parseGoDuration(goDefault) };
}

function wholeNumber(env: string, defaultValue: number, doc: string, format: 'int' | 'nat' = 'nat'): CoreSettingSchema<number> {
  return { env, doc, format, default: defaultValue };
}

/** A URL setting; `optional` ones may be empty. Messages never repeat the value: it may hold a password. */
function url(env: string, defaultValue: string, doc: string, schemes: readonly string[], optional: boolean): CoreSettingSchema<string> {
  return {
    env,
    doc,
    default: defaultValue,
    url: true,
    format(value: unknown) {
      if (typeof value !== 'string') throw new Error('must be a URL');
      if (value === '' && optional) return;
      const expected = `a URL starting with ${schemes.map((scheme) => `${scheme}://`).join(' or ')}`;
      let parsed: URL;
      try {
        parsed = new URL(value);
      } catch {
        throw new Error(`must be ${expected}`);
      }
      if (!schemes.includes(parsed.protocol.slice(0, -1))) throw new Error(`must be ${expected}`);
    },
  };
}

/** Room for some output beside the closing message kept back in every log (LOG_TRAILER_RESERVE_BYTES). */
const MIN_MAX_LOG_LENGTH = 2 * LOG_TRAILER_RESERVE_BYTES;

const QUEUE_TYPES = ['amqp', 'file'] as const;

/**
 * The core settings as a convict schema (flat: one key per variable, each
 * naming its `env`). Defaults are travis-ci/worker's unless noted; durations
 * are milliseconds once loaded. `config.example.env` documents each one.
 */
export const CORE_SETTINGS = {
  providerName: text('TRAVIS_WORKER_PROVIDER_NAME', 'local', 'The backend that makes a machine for each job (see --list-backend-providers); travis defaults to docker'),
  queueType: {
    env: 'TRAVIS_WORKER_QUEUE_TYPE',
    doc: 'Where jobs come from: amqp (RabbitMQ) or file (a directory); travis defaults to amqp',
    default: 'file',
    format(value: unknown) {
      if (value === 'http') throw new Error('the http queue type (job-board) is not supported by mayfly: use amqp or file');
      if (!QUEUE_TYPES.includes(value as (typeof QUEUE_TYPES)[number])) throw new Error('must be amqp or file');
    },
  } satisfies CoreSettingSchema<string>,
  queueName: text('TRAVIS_WORKER_QUEUE_NAME', 'builds', 'The queue to take jobs from (AMQP queue, or subdirectory of BASE_DIR)'),
  poolSize: {
    env: 'TRAVIS_WORKER_POOL_SIZE',
    doc: 'How many jobs this worker runs at the same time',
    default: 1,
    format(value: unknown) {
      if (!Number.isInteger(value) || (value as number) < 1 || (value as number) > MAX_POOL_SIZE) {
        throw new Error(`must be a whole number from 1 to ${MAX_POOL_SIZE}`);
      }
    },
  } satisfies CoreSettingSchema<number>,
  hostname: text('TRAVIS_WORKER_HOSTNAME', osHostname(), "Names this worker in job logs and state updates (empty: this machine's host name)"),
  infra: text('TRAVIS_WORKER_INFRA', '', 'Infrastructure tag sent with the first log part, e.g. gce or ec2'),
  debug: flag('TRAVIS_WORKER_DEBUG', 'Log at debug level'),

  amqpUri: url('TRAVIS_WORKER_AMQP_URI', 'amqp://', 'The RabbitMQ broker jobs come from (amqp:// alone means guest@localhost)', ['amqp', 'amqps'], false),
  amqpHeartbeat: duration('TRAVIS_WORKER_AMQP_HEARTBEAT', '10s', 'AMQP heartbeat: after this long without traffic the broker connection counts as dead'),
  amqpConsumerPriority: wholeNumber('TRAVIS_WORKER_AMQP_CONSUMER_PRIORITY', 0, 'Consumer priority (x-priority) on the jobs queue', 'int'),
  amqpTlsCert: text('TRAVIS_WORKER_AMQP_TLS_CERT', '', 'PEM certificate to trust for the jobs broker'),
  amqpTlsCertPath: text('TRAVIS_WORKER_AMQP_TLS_CERT_PATH', '', 'File holding a PEM certificate to trust for the jobs broker'),
  amqpInsecure: flag('TRAVIS_WORKER_AMQP_INSECURE', "Don't verify the brokers' TLS certificates"),
  logsAmqpUri: url('TRAVIS_WORKER_LOGS_AMQP_URI', '', 'A separate RabbitMQ broker for log parts (empty: the jobs broker)', ['amqp', 'amqps'], true),
  logsAmqpTlsCert: text('TRAVIS_WORKER_LOGS_AMQP_TLS_CERT', '', 'PEM certificate to trust for the logs broker'),
  logsAmqpTlsCertPath: text('TRAVIS_WORKER_LOGS_AMQP_TLS_CERT_PATH', '', 'File holding a PEM certificate to trust for the logs broker'),
  rabbitmqSharding: flag('TRAVIS_WORKER_RABBITMQ_SHARDING', 'Publish log parts to the sharded logs exchange (reporting.jobs.logs_sharded)'),
  amqpReconnectBackoff: duration('TRAVIS_WORKER_AMQP_RECONNECT_BACKOFF', '1s', 'First pause before reconnecting a lost broker connection; doubles (with jitter) on each failed attempt (mayfly only)'),
  amqpReconnectMaxBackoff: duration('TRAVIS_WORKER_AMQP_RECONNECT_MAX_BACKOFF', '30s', 'Longest pause between attempts to reconnect to the broker (mayfly only)'),
  logDeliveryTimeout: duration('TRAVIS_WORKER_LOG_DELIVERY_TIMEOUT', '2m', 'Longest a log part or state update may wait for the broker, reconnects included, before the job is requeued (mayfly only)'),

  baseDir: text('TRAVIS_WORKER_BASE_DIR', './var/file-queue', 'Directory of the file queue (QUEUE_TYPE=file); travis defaults to the working directory'),
  filePollingInterval: duration('TRAVIS_WORKER_FILE_POLLING_INTERVAL', '5s', 'How often the file queue looks for new jobs'),
  fileEchoLogs: flag('TRAVIS_WORKER_FILE_ECHO_LOGS', "Also print each job's log on the worker's output (file queue; mayfly only)", true),

  buildApiUri: url('TRAVIS_WORKER_BUILD_API_URI', '', 'Build script API endpoint, path included; a user name in it is sent as the token (empty: built-in script generator)', ['http', 'https'], true),
  buildApiInsecureSkipVerify: flag('TRAVIS_WORKER_BUILD_API_INSECURE_SKIP_VERIFY', "Don't verify the build API's TLS certificate"),
  buildApiTimeout: duration('TRAVIS_WORKER_BUILD_API_TIMEOUT', '2m', 'Total time to get one build script, retries included (mayfly only)'),

  hardTimeout: duration('TRAVIS_WORKER_HARD_TIMEOUT', '50m', 'Longest a job may run before it is stopped'),
  logTimeout: duration('TRAVIS_WORKER_LOG_TIMEOUT', '10m', 'Longest a job may go without printing anything'),
  startupTimeout: duration('TRAVIS_WORKER_STARTUP_TIMEOUT', '4m', "Longest a job's machine may take to be ready"),
  scriptUploadTimeout: duration('TRAVIS_WORKER_SCRIPT_UPLOAD_TIMEOUT', '3m30s', 'Longest the build script upload may take'),
  initialSleep: duration('TRAVIS_WORKER_INITIAL_SLEEP', '1s', 'Pause before a job starts, so its log opens in order'),
  maxLogLength: {
    env: 'TRAVIS_WORKER_MAX_LOG_LENGTH',
    doc: 'Bytes of log a job may write before it is stopped',
    default: 4_500_000,
    format(value: unknown) {
      // The worker's closing message takes its room from this too.
      if (!Number.isInteger(value) || (value as number) < MIN_MAX_LOG_LENGTH) throw new Error(`must be a whole number of at least ${MIN_MAX_LOG_LENGTH}`);
    },
  } satisfies CoreSettingSchema<number>,
  payloadMaxSize: wholeNumber('TRAVIS_WORKER_PAYLOAD_MAX_SIZE', DEFAULT_MAX_PAYLOAD_BYTES, 'Job payloads larger than this many bytes are rejected unread (mayfly only)'),

  defaultLanguage: text('TRAVIS_WORKER_DEFAULT_LANGUAGE', 'default', 'language of a job that names none'),
  defaultDist: text('TRAVIS_WORKER_DEFAULT_DIST', 'xenial', 'dist of a job that names none'),
  defaultArch: text('TRAVIS_WORKER_DEFAULT_ARCH', 'amd64', 'arch of a job that names none'),
  defaultGroup: text('TRAVIS_WORKER_DEFAULT_GROUP', 'stable', 'group of a job that names none'),
  defaultOs: text('TRAVIS_WORKER_DEFAULT_OS', 'linux', 'os of a job that names none'),

  // Passed to the build API as text (travis does not check them), but URLs all the same: shown masked.
  buildAptCache: { ...text('TRAVIS_WORKER_BUILD_APT_CACHE', '', 'APT cache (proxy) URL the build script uses'), url: true },
  buildNpmCache: { ...text('TRAVIS_WORKER_BUILD_NPM_CACHE', '', 'npm cache (proxy) URL the build script uses'), url: true },
  buildParanoid: flag('TRAVIS_WORKER_BUILD_PARANOID', 'Build scripts remove sudo and other escalation paths'),
  buildFixResolvConf: flag('TRAVIS_WORKER_BUILD_FIX_RESOLV_CONF', 'Build scripts rewrite /etc/resolv.conf'),
  buildFixEtcHosts: flag('TRAVIS_WORKER_BUILD_FIX_ETC_HOSTS', 'Build scripts rewrite /etc/hosts'),
  buildCacheType: text('TRAVIS_WORKER_BUILD_CACHE_TYPE', '', 'Build cache store for build scripts, e.g. s3'),
  buildCacheFetchTimeout: duration('TRAVIS_WORKER_BUILD_CACHE_FETCH_TIMEOUT', '5m', 'Longest a build script may spend fetching its cache'),
  buildCachePushTimeout: duration('TRAVIS_WORKER_BUILD_CACHE_PUSH_TIMEOUT', '5m', 'Longest a build script may spend pushing its cache'),
  buildCacheS3Scheme: text('TRAVIS_WORKER_BUILD_CACHE_S3_SCHEME', '', 'Build cache S3 scheme (http or https)'),
  buildCacheS3Region: text('TRAVIS_WORKER_BUILD_CACHE_S3_REGION', '', 'Build cache S3 region'),
  buildCacheS3Bucket: text('TRAVIS_WORKER_BUILD_CACHE_S3_BUCKET', '', 'Build cache S3 bucket'),
  buildCacheS3AccessKeyId: text('TRAVIS_WORKER_BUILD_CACHE_S3_ACCESS_KEY_ID', '', 'Build cache S3 access key id'),
  buildCacheS3SecretAccessKey: text('TRAVIS_WORKER_BUILD_CACHE_S3_SECRET_ACCESS_KEY', '', 'Build cache S3 secret access key', true),

  // Operating the worker (docs/operations.md). The default drain leaves 5 minutes of a
  // 50-minute stop budget (systemd/mayfly.service) for requeueing, destroying
  // instances and closing; a job that needs longer than 45 minutes is
  // requeued and runs again elsewhere from the start.
  shutdownTimeout: duration('TRAVIS_WORKER_SHUTDOWN_TIMEOUT', '45m', 'On SIGTERM or SIGINT, how long running jobs may go on before they are requeued (mayfly only)'),
  remoteControllerAddr: {
    env: 'TRAVIS_WORKER_REMOTE_CONTROLLER_ADDR',
    doc: 'host:port of the control API (/healthz, /ready, /worker, /pool, /metrics); :port means 127.0.0.1 (empty: off)',
    default: '',
    format(value: unknown) {
      if (typeof value !== 'string') throw new Error('must be host:port');
      if (value !== '') parseListenAddress(value);
    },
  } satisfies CoreSettingSchema<string>,
  remoteControllerAuth: {
    env: 'TRAVIS_WORKER_REMOTE_CONTROLLER_AUTH',
    doc: 'user:password the control API asks for (basic auth); empty: only /healthz and /ready answer',
    default: '',
    sensitive: true,
    format(value: unknown) {
      if (typeof value !== 'string' || (value !== '' && !/^[^:]+:.+$/.test(value))) throw new Error('must be user:password');
    },
  } satisfies CoreSettingSchema<string>,
  pprofPort: {
    env: 'TRAVIS_WORKER_PPROF_PORT',
    doc: 'Port of the debug listener (CPU and heap profiles for go tool pprof, heap snapshot, diagnostic report, /metrics), protected by REMOTE_CONTROLLER_AUTH; empty: off (mayfly only)',
    default: '',
    format(value: unknown) {
      if (typeof value !== 'string' || (value.trim() !== '' && !(/^\d{1,5}$/.test(value.trim()) && Number(value) <= 65535))) {
        throw new Error('must be a port number (0-65535) or empty');
      }
    },
  } satisfies CoreSettingSchema<string>,
  pprofAddr: text('TRAVIS_WORKER_PPROF_ADDR', '127.0.0.1', 'Address the debug listener binds (mayfly only)'),
  pprofNoAuth: flag(
    'TRAVIS_WORKER_PPROF_NO_AUTH',
    'Serve the debug listener without credentials when REMOTE_CONTROLLER_AUTH is empty: loopback only, and every process on this host (local and ssh jobs included) can then profile the worker; never the heap snapshot (mayfly only)',
  ),
  startHook: text('TRAVIS_WORKER_START_HOOK', '', 'Command run before the worker takes jobs (split on spaces, no shell); a failure is logged'),
  stopHook: text('TRAVIS_WORKER_STOP_HOOK', '', 'Command run just before the worker exits (split on spaces, no shell); a failure is logged'),
  heartbeatUrl: url('TRAVIS_WORKER_HEARTBEAT_URL', '', 'URL polled every 5 minutes; an answer of {"state":"down"} drains the worker (empty: off)', ['http', 'https'], true),
  heartbeatUrlAuthToken: text('TRAVIS_WORKER_HEARTBEAT_URL_AUTH_TOKEN', '', 'Sent to HEARTBEAT_URL as "Authorization: token <value>"; file:///path reads it from that file', true),

  // Reliability (docs/operations.md). Five failed starts in a row, with none working in
  // between, is far beyond the odd failed boot (a few percent of starts at
  // worst: 5 in a row by chance is rarer than 1 in 10^7), yet stops a pool of
  // any size within one round of starts instead of churning the whole queue.
  breakerThreshold: wholeNumber('TRAVIS_WORKER_BREAKER_THRESHOLD', 5, 'After this many instance start failures in a row, take no jobs for a while (circuit breaker); 0: off (mayfly only)'),
  breakerBackoff: duration('TRAVIS_WORKER_BREAKER_BACKOFF', '30s', 'How long the circuit breaker first holds jobs back before trying one; doubles on each opening that follows (mayfly only)'),
  breakerMaxBackoff: duration('TRAVIS_WORKER_BREAKER_MAX_BACKOFF', '10m', 'The longest the circuit breaker holds jobs back before trying one (mayfly only)'),
  requeueLimit: wholeNumber('TRAVIS_WORKER_REQUEUE_LIMIT', DEFAULT_REQUEUE_LIMIT, 'After this many requeues of the same job in a row, end it errored instead of requeueing it again; 0: no limit (mayfly only)'),
  reaperInterval: duration('TRAVIS_WORKER_REAPER_INTERVAL', '5m', 'How often to look for and destroy orphaned instances (expired lease, or left by an earlier run of this worker); 0: off (mayfly only)'),
  reaperGrace: duration('TRAVIS_WORKER_REAPER_GRACE', '10m', 'An instance of this worker that no job here holds is destroyed only once it is older than this (mayfly only)'),
};

type CoreSettings = {
  [K in keyof typeof CORE_SETTINGS]: (typeof CORE_SETTINGS)[K] extends CoreSettingSchema<infer T> ? T : never;
};
type CoreKey = keyof CoreSettings;

/** A travis-ci/worker setting mayfly accepts (so an existing env file still starts) but does not use. */
export interface IgnoredSetting {
  env: string;
  doc: string;
  sensitive?: boolean;
}

/** travis-ci/worker v6 variables with no effect here; loading lists the ones that are set. */
export const IGNORED_SETTINGS: readonly IgnoredSetting[] = [
  { env: 'TRAVIS_WORKER_LIBRATO_EMAIL', doc: 'Librato metrics account email' },
  { env: 'TRAVIS_WORKER_LIBRATO_TOKEN', doc: 'Librato metrics account token', sensitive: true },
  { env: 'TRAVIS_WORKER_LIBRATO_SOURCE', doc: 'Librato metrics source name' },
  { env: 'TRAVIS_WORKER_SENTRY_DSN', doc: 'Sentry DSN', sensitive: true },
  { env: 'TRAVIS_WORKER_SENTRY_HOOK_ERRORS', doc: 'Send error-level log lines to Sentry' },
  { env: 'TRAVIS_WORKER_STATE_UPDATE_POOL_SIZE', doc: 'travis state update goroutines' },
  { env: 'TRAVIS_WORKER_LOG_POOL_SIZE', doc: 'travis log writer goroutines' },
  { env: 'TRAVIS_WORKER_JOB_BOARD_URL', doc: 'job-board URL for the http queue', sensitive: true },
  { env: 'TRAVIS_WORKER_TRAVIS_SITE', doc: 'org or com, for job-board' },
  { env: 'TRAVIS_WORKER_HTTP_POLLING_INTERVAL', doc: 'http queue polling interval' },
  { env: 'TRAVIS_WORKER_HTTP_REFRESH_CLAIM_INTERVAL', doc: 'http queue claim refresh interval' },
  { env: 'TRAVIS_WORKER_BUILD_TRACE_ENABLED', doc: 'Download build traces' },
  { env: 'TRAVIS_WORKER_BUILD_TRACE_S3_BUCKET', doc: 'Build trace S3 bucket' },
  { env: 'TRAVIS_WORKER_BUILD_TRACE_S3_KEY_PREFIX', doc: 'Build trace S3 key prefix' },
  { env: 'TRAVIS_WORKER_BUILD_TRACE_S3_REGION', doc: 'Build trace S3 region' },
  { env: 'TRAVIS_WORKER_PAYLOAD_FILTER_EXECUTABLE', doc: 'Executable filtering the payload sent to the build API' },
  { env: 'TRAVIS_WORKER_SKIP_SHUTDOWN_ON_LOG_TIMEOUT', doc: 'Keep VMs of log-timed-out jobs for debugging' },
  { env: 'TRAVIS_WORKER_PROGRESS_TYPE', doc: 'Backend progress reporting (text or unset)' },
  { env: 'TRAVIS_WORKER_SILENCE_METRICS', doc: 'Deprecated travis flag' },
  { env: 'TRAVIS_WORKER_LOG_METRICS', doc: 'Print metrics periodically' },
  { env: 'TRAVIS_WORKER_UPDATE_IMAGES', doc: 'LXD image update mode' },
  { env: 'TRAVIS_WORKER_STACKDRIVER_TRACE_ACCOUNT_JSON', doc: 'Stackdriver trace credentials (file path or JSON)', sensitive: true },
  { env: 'TRAVIS_WORKER_STACKDRIVER_PROJECT_ID', doc: 'Stackdriver trace project' },
  { env: 'TRAVIS_WORKER_OPENCENSUS_TRACING_ENABLED', doc: 'OpenCensus tracing' },
  { env: 'TRAVIS_WORKER_OPENCENSUS_SAMPLING_RATE', doc: 'OpenCensus sampling rate' },
  // Read by travis' systemd-wrapper rather than the worker, but they live in the same env file.
  { env: 'TRAVIS_WORKER_PRESTART_HOOK', doc: 'Script travis-worker\'s systemd wrapper runs first' },
  { env: 'TRAVIS_WORKER_SELF_IMAGE', doc: 'Docker image travis-worker\'s systemd wrapper runs' },
];

/** travis flags that its CLI library also read from the environment; here they are command-line only. */
const COMMAND_LINE_ONLY = new Set(['TRAVIS_WORKER_ECHO_CONFIG', 'TRAVIS_WORKER_LIST_BACKEND_PROVIDERS']);

const CORE_LEAVES: readonly SettingLeaf[] = schemaLeaves(CORE_SETTINGS);

/** The core setting behind a variable, for messages that concern a derived value. */
const ENV: { [K in CoreKey]: string } = Object.fromEntries(
  Object.entries(CORE_SETTINGS).map(([key, node]) => [key, node.env]),
) as { [K in CoreKey]: string };

/** Plain string order (Go's sort.Strings), not locale order, which ignores `_`. */
function byCodeUnits(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Problems found while loading, keyed by variable so each is reported once. */
class Problems {
  private readonly byVariable = new Map<string, string>();

  add(variable: string, problem: string): void {
    if (!this.byVariable.has(variable)) this.byVariable.set(variable, problem);
  }

  has(variable: string): boolean {
    return this.byVariable.has(variable);
  }

  get count(): number {
    return this.byVariable.size;
  }

  toError(): ConfigError {
    const lines = [...this.byVariable].sort(([a], [b]) => byCodeUnits(a, b)).map(([variable, problem]) => `${variable}: ${problem}`);
    return new ConfigError(
      lines.length === 1 ? `invalid configuration: ${lines[0]}` : `invalid configuration (${lines.length} problems):\n  ${lines.join('\n  ')}`,
    );
  }
}

/**
 * Read one schema's settings from `env`: each leaf from the variable
 * `envName(leaf)` names, parsed strictly, then validated by convict. Every
 * problem goes to `problems` under the variable's name; the result is
 * undefined when there was any.
 */
function readSettings(
  schema: object,
  envName: (leaf: SettingLeaf) => string,
  env: NodeJS.ProcessEnv,
  problems: Problems,
): Record<string, unknown> | undefined {
  const before = problems.count;
  const leaves = schemaLeaves(schema);
  // Values are set below one by one, so each failure is tied to its variable; convict itself reads nothing.
  const settings = convict<Record<string, unknown>>(schema as convict.Schema<Record<string, unknown>>, { env: {}, args: [] });
  const variableOfPath = new Map<string, string>();
  for (const leaf of leaves) {
    const variable = envName(leaf);
    variableOfPath.set(leaf.path, variable);
    const raw = env[variable];
    if (isRequired(leaf.node) && (raw === undefined || raw.trim() === '')) {
      problems.add(variable, 'is required but not set');
      continue;
    }
    if (raw === undefined) continue;
    let value: unknown;
    try {
      value = parseEnvText(leaf.node, raw);
    } catch (err) {
      problems.add(variable, describeBadValue(leaf.node, raw, errorMessage(err)));
      continue;
    }
    try {
      // A format's own coercion (durations, JSON) runs here; its message may quote the value.
      settings.set(leaf.path, value);
    } catch (err) {
      problems.add(variable, leaf.node.sensitive === true ? 'has a value its format rejects' : describeBadValue(leaf.node, raw, errorMessage(err)));
    }
  }
  try {
    settings.validate({ allowed: 'strict' });
  } catch (err) {
    // convict reports one `path: message[: value was ...]` line per setting; name the variable instead.
    for (const line of errorMessage(err).split('\n')) {
      const match = /^([^:\s]+): (.*?)(?:: value was .*)?$/.exec(line);
      const variable = match ? variableOfPath.get(match[1] as string) : undefined;
      if (match === null || variable === undefined) {
        problems.add('(settings)', line);
        continue;
      }
      const raw = env[variable];
      const leaf = leaves.find((candidate) => candidate.path === match[1]) as SettingLeaf;
      problems.add(variable, raw === undefined ? (match[2] as string) : describeBadValue(leaf.node, raw, match[2] as string));
    }
  }
  return problems.count === before ? settings.getProperties() : undefined;
}

/** A value's problem, quoting the value when that can't reveal a secret. */
function describeBadValue(node: convict.SchemaObj, raw: string, problem: string): string {
  // Secrets and URL-valued settings are never repeated, whatever the value looks like (a URL
  // missing its scheme, `user:pw@host`, is still a password); nor is anything with a `user@`
  // part, nor a value the message already quotes.
  const revealing = node.sensitive === true || isUrlSetting(node) || raw.includes('@');
  if (revealing || problem.includes(JSON.stringify(raw))) return problem;
  const shown = raw.length > 60 ? `${raw.slice(0, 60)}...` : raw;
  return `${problem} (got ${JSON.stringify(shown)})`;
}

/** The PEM text to trust: the inline certificate and the file's, both kept (as travis adds both to its pool). */
function trustedCerts(inline: string, path: string, pathVariable: string, problems: Problems): string | undefined {
  const pems = inline.trim() === '' ? [] : [inline];
  if (path !== '') {
    try {
      pems.push(readFileSync(path, 'utf8'));
    } catch (err) {
      problems.add(pathVariable, `cannot read the certificate file: ${errorMessage(err)}`);
    }
  }
  return pems.length === 0 ? undefined : pems.join('\n');
}

type Owner = { kind: 'core' | 'ignored' } | { kind: 'backend'; backend: string };

/** A family variable's backend, family key and name (lower case), if `variable` is one. */
function familyMember(
  variable: string,
  backends: readonly AnyBackendDefinition[],
): { backend: string; family: string; name: string } | undefined {
  for (const backend of backends) {
    for (const [family, { prefix }] of Object.entries(backend.settingFamilies ?? {}) as [string, SettingFamily][]) {
      const start = familyEnvPrefix(backend.name, prefix);
      if (variable.startsWith(start) && variable.length > start.length) {
        return { backend: backend.name, family, name: variable.slice(start.length).toLowerCase() };
      }
    }
  }
  return undefined;
}

/** The selected backend's family settings from `env`, e.g. `{ images: { ruby: '...' } }`. */
function readFamilies(
  backend: AnyBackendDefinition,
  backends: readonly AnyBackendDefinition[],
  known: Map<string, Owner>,
  env: NodeJS.ProcessEnv,
): Record<string, Record<string, string>> {
  const families: Record<string, Record<string, string>> = Object.fromEntries(
    Object.keys(backend.settingFamilies ?? {}).map((family) => [family, {}]),
  );
  for (const [variable, value] of Object.entries(env)) {
    if (value === undefined || known.has(variable)) continue;
    const member = familyMember(variable, backends);
    if (member?.backend === backend.name) (families[member.family] as Record<string, string>)[member.name] = value;
  }
  return families;
}

/** Which variables exist: core, ignored, and every declared setting of every backend. */
function knownVariables(backends: readonly AnyBackendDefinition[]): Map<string, Owner> {
  const known = new Map<string, Owner>();
  for (const leaf of CORE_LEAVES) known.set(leaf.node.env as string, { kind: 'core' });
  for (const setting of IGNORED_SETTINGS) known.set(setting.env, { kind: 'ignored' });
  for (const backend of backends) {
    for (const leaf of schemaLeaves(backend.settings)) {
      const variable = backendEnvName(backend.name, leaf.parts);
      const previous = known.get(variable);
      if (previous !== undefined && !(previous.kind === 'backend' && previous.backend === backend.name)) {
        // A programming error in a backend, but it must not silently shadow a core setting.
        throw new ConfigError(`backend ${backend.name}: setting ${leaf.path} would be read from ${variable}, which is already taken`);
      }
      known.set(variable, { kind: 'backend', backend: backend.name });
    }
  }
  return known;
}

/**
 * Read the configuration from `env` (the process environment by default):
 * core settings, then the selected backend's. Throws a `ConfigError` naming
 * each unknown variable, bad value, missing required setting, and an unknown
 * provider name.
 */
export function loadConfig(backends: readonly AnyBackendDefinition[], env: NodeJS.ProcessEnv = process.env): WorkerConfig {
  const problems = new Problems();
  const known = knownVariables(backends);
  const ignoredSettings: string[] = [];

  for (const [variable, value] of Object.entries(env)) {
    if (!variable.startsWith(ENV_PREFIX) || value === undefined) continue;
    const owner = known.get(variable);
    if (owner?.kind === 'ignored') ignoredSettings.push(variable);
    if (owner !== undefined || familyMember(variable, backends) !== undefined) continue;
    if (COMMAND_LINE_ONLY.has(variable)) {
      problems.add(variable, 'is not read from the environment by mayfly: pass the command-line flag instead');
      continue;
    }
    const suggestion = closestName(variable, known.keys());
    problems.add(variable, `unknown setting${suggestion === undefined ? '' : ` (did you mean ${suggestion}?)`}`);
  }

  const core = readSettings(CORE_SETTINGS, (leaf) => leaf.node.env as string, env, problems) as CoreSettings | undefined;

  // The backend is looked up even when other core settings are bad, so one run reports everything.
  const providerName = env[ENV.providerName] ?? CORE_SETTINGS.providerName.default ?? '';
  const backend = backends.find((candidate) => candidate.name.toLowerCase() === providerName.trim().toLowerCase());
  let backendSettings: Record<string, unknown> | undefined;
  if (backend === undefined) {
    const names = backends.map((candidate) => candidate.name).sort();
    problems.add(ENV.providerName, `unknown provider ${JSON.stringify(providerName)} (known: ${names.join(', ') || 'none'})`);
  } else {
    const declared = readSettings(backend.settings, (leaf) => backendEnvName(backend.name, leaf.parts), env, problems);
    if (declared !== undefined) backendSettings = { ...declared, ...readFamilies(backend, backends, known, env) };
    if (backendSettings !== undefined) {
      for (const { setting, problem } of backend.validate?.(backendSettings) ?? []) {
        problems.add(backendEnvName(backend.name, setting.split('.')), problem);
      }
    }
  }

  const tlsCert = core && trustedCerts(core.amqpTlsCert, core.amqpTlsCertPath, ENV.amqpTlsCertPath, problems);
  const logsTlsCert = core && trustedCerts(core.logsAmqpTlsCert, core.logsAmqpTlsCertPath, ENV.logsAmqpTlsCertPath, problems);
  const heartbeatToken = core && heartbeatAuthToken(core.heartbeatUrlAuthToken, problems);
  if (core && core.pprofPort.trim() !== '' && core.remoteControllerAuth === '') {
    if (!isLoopback(core.pprofAddr.trim())) {
      problems.add(ENV.pprofAddr, 'is not a loopback address, so the debug port needs TRAVIS_WORKER_REMOTE_CONTROLLER_AUTH to protect it');
    } else if (!core.pprofNoAuth) {
      problems.add(
        ENV.pprofPort,
        'is set, so the debug port needs TRAVIS_WORKER_REMOTE_CONTROLLER_AUTH: every process on this host can reach loopback, jobs of the local and ssh backends included (TRAVIS_WORKER_PPROF_NO_AUTH=true serves it there without credentials anyway)',
      );
    }
  }
  if (core && core.breakerThreshold > 0 && core.breakerBackoff <= 0) {
    problems.add(ENV.breakerBackoff, 'must be longer than 0s while the circuit breaker is on (BREAKER_THRESHOLD > 0)');
  }
  if (core && core.breakerMaxBackoff < core.breakerBackoff) {
    problems.add(ENV.breakerMaxBackoff, 'must be at least TRAVIS_WORKER_BREAKER_BACKOFF');
  }
  // Zero would retry a refused connection in a tight loop.
  if (core && core.amqpReconnectBackoff <= 0) problems.add(ENV.amqpReconnectBackoff, 'must be longer than 0s');
  if (core && core.amqpReconnectMaxBackoff < core.amqpReconnectBackoff) {
    problems.add(ENV.amqpReconnectMaxBackoff, 'must be at least TRAVIS_WORKER_AMQP_RECONNECT_BACKOFF');
  }
  if (core && core.logDeliveryTimeout <= 0) problems.add(ENV.logDeliveryTimeout, 'must be longer than 0s');
  const otlpEndpoint = env.OTEL_EXPORTER_OTLP_ENDPOINT?.trim() || undefined;

  if (problems.count > 0 || core === undefined || backend === undefined || backendSettings === undefined) {
    throw problems.toError();
  }
  const config = toWorkerConfig(core, backend.name, backendSettings, { tlsCert, logsTlsCert }, ignoredSettings.sort());
  if (heartbeatToken !== undefined && config.heartbeat) config.heartbeat.authToken = heartbeatToken;
  if (otlpEndpoint !== undefined) config.telemetry.otlpEndpoint = otlpEndpoint;
  return config;
}

/** The heartbeat token: the text itself, or the file's content for `file://path` (as travis reads it), trimmed. */
function heartbeatAuthToken(value: string, problems: Problems): string | undefined {
  if (!value.startsWith('file://')) return value.trim() === '' ? undefined : value.trim();
  try {
    const token = readFileSync(value.slice('file://'.length), 'utf8').trim();
    return token === '' ? undefined : token;
  } catch (err) {
    problems.add(ENV.heartbeatUrlAuthToken, `cannot read the token file: ${errorMessage(err)}`);
    return undefined;
  }
}

/** `''` means "not set" for optional text settings. */
function optional(value: string): string | undefined {
  return value === '' ? undefined : value;
}

function toWorkerConfig(
  core: CoreSettings,
  providerName: string,
  backendSettings: Record<string, unknown>,
  certs: { tlsCert: string | undefined; logsTlsCert: string | undefined },
  ignoredSettings: string[],
): WorkerConfig {
  const uri = optional(core.buildApiUri);
  const logsUri = optional(core.logsAmqpUri);
  const aptCache = optional(core.buildAptCache);
  const npmCache = optional(core.buildNpmCache);
  const cacheType = optional(core.buildCacheType);
  const s3 = {
    scheme: optional(core.buildCacheS3Scheme),
    region: optional(core.buildCacheS3Region),
    bucket: optional(core.buildCacheS3Bucket),
    accessKeyId: optional(core.buildCacheS3AccessKeyId),
    secretAccessKey: optional(core.buildCacheS3SecretAccessKey),
  };
  return {
    providerName,
    queueType: core.queueType as WorkerConfig['queueType'],
    queueName: core.queueName,
    poolSize: core.poolSize,
    hostname: core.hostname.trim() === '' ? osHostname() : core.hostname,
    infra: core.infra,
    amqp: {
      uri: core.amqpUri,
      ...(logsUri === undefined ? {} : { logsUri }),
      heartbeatMs: core.amqpHeartbeat,
      consumerPriority: core.amqpConsumerPriority,
      ...(certs.tlsCert === undefined ? {} : { tlsCert: certs.tlsCert }),
      ...(certs.logsTlsCert === undefined ? {} : { logsTlsCert: certs.logsTlsCert }),
      insecure: core.amqpInsecure,
      sharding: core.rabbitmqSharding,
      reconnect: { initialMs: core.amqpReconnectBackoff, maxMs: core.amqpReconnectMaxBackoff },
      logDeliveryTimeoutMs: core.logDeliveryTimeout,
    },
    file: { baseDir: core.baseDir, pollingIntervalMs: core.filePollingInterval, echoLogs: core.fileEchoLogs },
    buildApi: {
      ...(uri === undefined ? {} : { uri }),
      insecureSkipVerify: core.buildApiInsecureSkipVerify,
      timeoutMs: core.buildApiTimeout,
      options: {
        ...(aptCache === undefined ? {} : { aptCache }),
        ...(npmCache === undefined ? {} : { npmCache }),
        paranoid: core.buildParanoid,
        fixResolvConf: core.buildFixResolvConf,
        fixEtcHosts: core.buildFixEtcHosts,
        ...(cacheType === undefined ? {} : { cacheType }),
        // travis sends whole seconds (int(d.Seconds())).
        cacheFetchTimeoutS: Math.trunc(core.buildCacheFetchTimeout / 1000),
        cachePushTimeoutS: Math.trunc(core.buildCachePushTimeout / 1000),
        cacheS3: Object.fromEntries(Object.entries(s3).filter(([, value]) => value !== undefined)),
      },
    },
    timeouts: {
      hardMs: core.hardTimeout,
      logSilenceMs: core.logTimeout,
      startupMs: core.startupTimeout,
      scriptUploadMs: core.scriptUploadTimeout,
      initialSleepMs: core.initialSleep,
      shutdownMs: core.shutdownTimeout,
    },
    maxLogLength: core.maxLogLength,
    payloadMaxBytes: core.payloadMaxSize,
    defaults: {
      language: core.defaultLanguage,
      dist: core.defaultDist,
      arch: core.defaultArch,
      group: core.defaultGroup,
      os: core.defaultOs,
    },
    logLevel: core.debug ? 'debug' : 'info',
    backendSettings,
    ignoredSettings,
    ...(core.remoteControllerAddr === ''
      ? {}
      : {
          control: parseListenAddress(core.remoteControllerAddr),
        }),
    ...(core.remoteControllerAuth === '' ? {} : { remoteAuth: core.remoteControllerAuth }),
    ...(core.pprofPort.trim() === '' ? {} : { debug: { host: core.pprofAddr.trim(), port: Number(core.pprofPort.trim()), noAuth: core.pprofNoAuth } }),
    hooks: {
      ...(core.startHook.trim() === '' ? {} : { start: core.startHook.trim() }),
      ...(core.stopHook.trim() === '' ? {} : { stop: core.stopHook.trim() }),
    },
    ...(core.heartbeatUrl === '' ? {} : { heartbeat: { url: core.heartbeatUrl } }),
    telemetry: {},
    breaker: { threshold: core.breakerThreshold, backoffMs: core.breakerBackoff, maxBackoffMs: core.breakerMaxBackoff },
    requeueLimit: core.requeueLimit,
    reaper: { intervalMs: core.reaperInterval, graceMs: core.reaperGrace },
  };
}

/**
 * The core settings' values back out of a loaded config, for echoing. The
 * certificate paths are not here: loading folded their files into the
 * certificates.
 */
function coreValues(config: WorkerConfig): Omit<CoreSettings, 'amqpTlsCertPath' | 'logsAmqpTlsCertPath'> {
  const { amqp, buildApi, timeouts, defaults } = config;
  const { options } = buildApi;
  return {
    providerName: config.providerName,
    queueType: config.queueType,
    queueName: config.queueName,
    poolSize: config.poolSize,
    hostname: config.hostname,
    infra: config.infra,
    debug: config.logLevel === 'debug',
    amqpUri: amqp.uri,
    amqpHeartbeat: amqp.heartbeatMs,
    amqpConsumerPriority: amqp.consumerPriority,
    amqpTlsCert: amqp.tlsCert ?? '',
    amqpInsecure: amqp.insecure,
    logsAmqpUri: amqp.logsUri ?? '',
    logsAmqpTlsCert: amqp.logsTlsCert ?? '',
    rabbitmqSharding: amqp.sharding,
    amqpReconnectBackoff: amqp.reconnect.initialMs,
    amqpReconnectMaxBackoff: amqp.reconnect.maxMs,
    logDeliveryTimeout: amqp.logDeliveryTimeoutMs,
    baseDir: config.file.baseDir,
    filePollingInterval: config.file.pollingIntervalMs,
    fileEchoLogs: config.file.echoLogs,
    buildApiUri: buildApi.uri ?? '',
    buildApiInsecureSkipVerify: buildApi.insecureSkipVerify,
    buildApiTimeout: buildApi.timeoutMs,
    hardTimeout: timeouts.hardMs,
    logTimeout: timeouts.logSilenceMs,
    startupTimeout: timeouts.startupMs,
    scriptUploadTimeout: timeouts.scriptUploadMs,
    initialSleep: timeouts.initialSleepMs,
    shutdownTimeout: timeouts.shutdownMs,
    maxLogLength: config.maxLogLength,
    payloadMaxSize: config.payloadMaxBytes,
    defaultLanguage: defaults.language,
    defaultDist: defaults.dist,
    defaultArch: defaults.arch,
    defaultGroup: defaults.group,
    defaultOs: defaults.os,
    buildAptCache: options.aptCache ?? '',
    buildNpmCache: options.npmCache ?? '',
    buildParanoid: options.paranoid,
    buildFixResolvConf: options.fixResolvConf,
    buildFixEtcHosts: options.fixEtcHosts,
    buildCacheType: options.cacheType ?? '',
    buildCacheFetchTimeout: options.cacheFetchTimeoutS * 1000,
    buildCachePushTimeout: options.cachePushTimeoutS * 1000,
    buildCacheS3Scheme: options.cacheS3.scheme ?? '',
    buildCacheS3Region: options.cacheS3.region ?? '',
    buildCacheS3Bucket: options.cacheS3.bucket ?? '',
    buildCacheS3AccessKeyId: options.cacheS3.accessKeyId ?? '',
    buildCacheS3SecretAccessKey: options.cacheS3.secretAccessKey ?? '',
    remoteControllerAddr: config.control ? formatListenAddress(config.control) : '',
    remoteControllerAuth: config.remoteAuth ?? '',
    pprofPort: config.debug ? String(config.debug.port) : '',
    pprofAddr: config.debug?.host ?? '127.0.0.1',
    pprofNoAuth: config.debug?.noAuth ?? false,
    startHook: config.hooks.start ?? '',
    stopHook: config.hooks.stop ?? '',
    heartbeatUrl: config.heartbeat?.url ?? '',
    heartbeatUrlAuthToken: config.heartbeat?.authToken ?? '',
    breakerThreshold: config.breaker.threshold,
    breakerBackoff: config.breaker.backoffMs,
    breakerMaxBackoff: config.breaker.maxBackoffMs,
    requeueLimit: config.requeueLimit,
    reaperInterval: config.reaper.intervalMs,
    reaperGrace: config.reaper.graceMs,
  };
}

/** Certificates are long: echo says how long instead. */
const CERT_SETTINGS = new Set<CoreKey>(['amqpTlsCert', 'logsAmqpTlsCert']);

function echoCoreLine(key: CoreKey, value: unknown): string {
  const node: convict.SchemaObj = CORE_SETTINGS[key];
  const variable = ENV[key];
  if (CERT_SETTINGS.has(key) && typeof value === 'string' && value !== '') {
    return `# ${variable}: ${value.length} characters of PEM (not shown)`;
  }
  return exportLine(variable, formatSettingValue(node, value));
}

/**
 * The effective configuration as `export TRAVIS_WORKER_X="value"` lines, as
 * travis' `--echo-config` prints it: core settings sorted by name, then the
 * selected backend's. Secrets are masked, durations written the Go way.
 * (The `*_TLS_CERT_PATH` files were read into the `*_TLS_CERT` values.)
 */
export function echoConfig(config: WorkerConfig, backends: readonly AnyBackendDefinition[]): string {
  const values = coreValues(config);
  const core = (Object.keys(values) as (keyof typeof values)[])
    .sort((a, b) => byCodeUnits(ENV[a], ENV[b]))
    .map((key) => echoCoreLine(key, values[key]));

  const backend = backends.find((candidate) => candidate.name === config.providerName);
  const provider =
    backend === undefined
      ? [`# (no backend named ${config.providerName} is known)`]
      : schemaLeaves(backend.settings)
          .map((leaf) => ({ leaf, variable: backendEnvName(backend.name, leaf.parts) }))
          .sort((a, b) => byCodeUnits(a.variable, b.variable))
          .map(({ leaf, variable }) => exportLine(variable, formatSettingValue(leaf.node, valueAt(config.backendSettings, leaf.parts))))
          .concat(echoFamilies(backend, config.backendSettings));

  const lines = ['# mayfly effective configuration (secrets masked)', ...core, '', `# provider settings (${config.providerName})`, ...provider];
  if (config.ignoredSettings.length > 0) {
    lines.push('', `# set but not used by mayfly: ${config.ignoredSettings.join(' ')}`);
  }
  return `${lines.join('\n')}\n`;
}

function echoFamilies(backend: AnyBackendDefinition, settings: Record<string, unknown>): string[] {
  return (Object.entries(backend.settingFamilies ?? {}) as [string, SettingFamily][]).flatMap(([family, { prefix, sensitive }]) =>
    Object.entries((settings[family] ?? {}) as Record<string, string>)
      .map(([name, value]) => exportLine(`${familyEnvPrefix(backend.name, prefix)}${name.toUpperCase()}`, sensitive && value !== '' ? MASK : value))
      .sort(byCodeUnits),
  );
}

function valueAt(settings: Record<string, unknown>, parts: readonly string[]): unknown {
  let value: unknown = settings;
  for (const part of parts) {
    value = typeof value === 'object' && value !== null ? (value as Record<string, unknown>)[part] : undefined;
  }
  return value;
}

/** A setting's default as an operator would write it; secrets masked, `(required)` when there is none. */
function describeDefault(node: convict.SchemaObj): string {
  if (isRequired(node)) return '(required)';
  // Defaults may be written the way the env would (`'5m'`) or already converted (ms).
  const shown = typeof node.default === 'string' ? (node.sensitive === true && node.default !== '' ? MASK : node.default) : formatSettingValue(node, node.default);
  return `(default ${JSON.stringify(shown)})`;
}

/**
 * Every backend with its description and settings (variable name, default,
 * doc), for `--list-backend-providers`.
 */
export function listBackendProviders(backends: readonly AnyBackendDefinition[]): string {
  const sections = [...backends]
    .sort((a, b) => a.name.localeCompare(b.name))
    .map((backend) => {
      const leaves = schemaLeaves(backend.settings);
      const families = (Object.values(backend.settingFamilies ?? {}) as SettingFamily[]).flatMap(({ prefix, doc }) => [
        `  ${familyEnvPrefix(backend.name, prefix)}<NAME>`,
        `      ${doc}`,
      ]);
      const settings = leaves.length === 0 && families.length === 0
        ? ['  (no settings)']
        : leaves.flatMap((leaf) => {
            const doc = typeof leaf.node.doc === 'string' && leaf.node.doc !== '' ? [`      ${leaf.node.doc}`] : [];
            return [`  ${backendEnvName(backend.name, leaf.parts)} ${describeDefault(leaf.node)}`, ...doc];
          }).concat(families);
      return [`${backend.name}: ${backend.description}`, ...settings].join('\n');
    });
  return `${sections.join('\n\n')}\n`;
}
