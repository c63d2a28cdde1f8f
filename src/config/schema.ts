/**
 * The core settings: one declaration per `TRAVIS_WORKER_*` variable, with
 * the name and default travis-ci/worker v6 gives it (config/config.go), so an
 * operator's /etc/default file keeps working, except where mayfly's
 * embedded defaults differ on purpose (no broker, no cloud:
 * `PROVIDER_NAME=local`, `QUEUE_TYPE=file`).
 */
import { hostname as osHostname } from 'node:os';
import type convict from 'convict';
import { DEFAULT_MAX_PAYLOAD_BYTES } from '../job/payload.js';
import { DEFAULT_REQUEUE_LIMIT } from '../job/requeues.js';
import { LOG_TRAILER_RESERVE_BYTES } from '../job-log/writer.js';
import { MAX_POOL_SIZE } from '../pool.js';
import { parseListenAddress } from '../util/net.js';
import { parseGoDuration } from './formats.js';

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
  progressType: {
    env: 'TRAVIS_WORKER_PROGRESS_TYPE',
    doc: "Backend progress in the job log while the instance starts: text (in a fold, as travis writes it) or empty (none, travis' default)",
    format: ['', 'text'],
    default: '',
  } satisfies CoreSettingSchema<string>,
  payloadFilterExecutable: text(
    'TRAVIS_WORKER_PAYLOAD_FILTER_EXECUTABLE',
    '',
    'Executable the job payload is piped through (JSON on stdin, JSON on stdout) before it goes to the build API; a failing filter errors the job',
  ),
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

export type CoreSettings = {
  [K in keyof typeof CORE_SETTINGS]: (typeof CORE_SETTINGS)[K] extends CoreSettingSchema<infer T> ? T : never;
};
export type CoreKey = keyof CoreSettings;

/** The core setting behind a variable, for messages that concern a derived value. */
export const ENV: { [K in CoreKey]: string } = Object.fromEntries(
  Object.entries(CORE_SETTINGS).map(([key, node]) => [key, node.env]),
) as { [K in CoreKey]: string };
