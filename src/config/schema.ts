/**
 * The core settings, declared in the shape of the config they load into
 * (`CoreConfig`): each leaf names its `TRAVIS_WORKER_*` variable, with the
 * name and default travis-ci/worker v6 gives it (config/config.go), so an
 * operator's /etc/default file keeps working, except where mayfly's
 * embedded defaults differ on purpose (no broker, no cloud:
 * `PROVIDER_NAME=local`, `QUEUE_TYPE=file`). Durations are milliseconds
 * once loaded; `config.example.env` and docs/configuration.md document each
 * variable.
 *
 * Over the usual size: it is a table, one entry per setting.
 */
import { DEFAULT_MAX_PAYLOAD_BYTES } from '../job/payload.js';
import { DEFAULT_REQUEUE_LIMIT } from '../job/requeues.js';
import { LOG_TRAILER_RESERVE_BYTES } from '../job-log/writer.js';
import { MAX_POOL_SIZE } from '../pool.js';
import { schemaLeaves, type SettingLeaf } from './env.js';
import {
  command,
  credentials,
  duration,
  flag,
  hostName,
  listenAddress,
  logLevel,
  oneOf,
  optionalPort,
  optionalText,
  optionalUrl,
  optionalUrlList,
  pem,
  secretOrFile,
  text,
  trimmed,
  urlList,
  wholeNumber,
  wholeSeconds,
  type CoreSettingSchema,
} from './leaves.js';
import type { HostCloud, WorkerConfig } from './types.js';
import { optionalGroup } from './unset.js';

/** What the core settings load into: the config, less what loading adds (the backend's settings and the rest). */
export type CoreConfig = Omit<WorkerConfig, 'backendSettings' | 'warnings' | 'telemetry'>;

/** A schema shaped like `T`: a leaf for each field, or a group for each object field. */
type CoreSchema<T> = {
  [K in keyof T]-?: CoreSettingSchema<T[K]> | (NonNullable<T[K]> extends object ? CoreSchema<NonNullable<T[K]>> : never);
};

/** Room for some output beside the closing message kept back in every log (LOG_TRAILER_RESERVE_BYTES). */
const MIN_MAX_LOG_LENGTH = 2 * LOG_TRAILER_RESERVE_BYTES;

const QUEUE_TYPES = ['amqp', 'file'] as const;

const AMQP_QUEUE_TYPES = ['classic', 'quorum'] as const;

const HOST_CLOUDS = ['aws', 'gce', 'none'] as const satisfies readonly HostCloud[];

/**
 * Deliveries of one job a quorum queue allows before it dead-letters it:
 * RabbitMQ 4's default `delivery-limit` for quorum queues, and above the
 * worker's own DEFAULT_REQUEUE_LIMIT, so a job the worker keeps requeueing
 * is ended by the worker (errored, with a log) before the broker steps in.
 */
const DEFAULT_AMQP_DELIVERY_LIMIT = 20;

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
  } satisfies CoreSettingSchema<(typeof QUEUE_TYPES)[number]>,
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
  hostname: hostName('TRAVIS_WORKER_HOSTNAME', "Names this worker in job logs and state updates (empty: this machine's host name)"),
  infra: text('TRAVIS_WORKER_INFRA', '', 'Infrastructure tag sent with the first log part, e.g. gce or ec2'),
  progressType: oneOf(
    'TRAVIS_WORKER_PROGRESS_TYPE',
    ['', 'text'],
    '',
    "Backend progress in the job log while the instance starts: text (in a fold, as travis writes it) or empty (none, travis' default)",
  ),
  payloadFilterExecutable: optionalText(
    'TRAVIS_WORKER_PAYLOAD_FILTER_EXECUTABLE',
    'Executable the job payload is piped through (JSON on stdin, JSON on stdout) before it goes to the build API; a failing filter errors the job',
  ),
  logLevel: logLevel('TRAVIS_WORKER_DEBUG', 'Log at debug level'),
  strictConfig: flag(
    'TRAVIS_WORKER_STRICT_CONFIG',
    'Stop at startup on an unknown TRAVIS_WORKER_* variable, usually a typo, instead of warning about it (mayfly only)',
  ),

  amqp: {
    uri: urlList(
      'TRAVIS_WORKER_AMQP_URI',
      'amqp://',
      'The RabbitMQ broker jobs come from (amqp:// alone means guest@localhost); the nodes of a cluster comma-separated, tried in turn',
      ['amqp', 'amqps'],
    ),
    heartbeatMs: duration('TRAVIS_WORKER_AMQP_HEARTBEAT', '10s', 'AMQP heartbeat: after this long without traffic the broker connection counts as dead'),
    consumerPriority: wholeNumber('TRAVIS_WORKER_AMQP_CONSUMER_PRIORITY', 0, 'Consumer priority (x-priority) on the jobs queue', 'int'),
    tlsCert: pem(
      'TRAVIS_WORKER_AMQP_TLS_CERT',
      'PEM certificate to trust for the jobs broker',
      'TRAVIS_WORKER_AMQP_TLS_CERT_PATH',
      'File holding a PEM certificate to trust for the jobs broker',
    ),
    insecure: flag('TRAVIS_WORKER_AMQP_INSECURE', "Don't verify the brokers' TLS certificates"),
    logsUri: optionalUrlList(
      'TRAVIS_WORKER_LOGS_AMQP_URI',
      'A separate RabbitMQ broker for log parts (empty: the jobs broker); the nodes of a cluster comma-separated',
      ['amqp', 'amqps'],
    ),
    logsTlsCert: pem(
      'TRAVIS_WORKER_LOGS_AMQP_TLS_CERT',
      'PEM certificate to trust for the logs broker',
      'TRAVIS_WORKER_LOGS_AMQP_TLS_CERT_PATH',
      'File holding a PEM certificate to trust for the logs broker',
    ),
    sharding: flag('TRAVIS_WORKER_RABBITMQ_SHARDING', 'Publish log parts to the sharded logs exchange (reporting.jobs.logs_sharded)'),
    reconnect: {
      initialMs: duration('TRAVIS_WORKER_AMQP_RECONNECT_BACKOFF', '1s', 'First pause before reconnecting a lost broker connection; doubles (with jitter) on each failed attempt (mayfly only)'),
      maxMs: duration('TRAVIS_WORKER_AMQP_RECONNECT_MAX_BACKOFF', '30s', 'Longest pause between attempts to reconnect to the broker (mayfly only)'),
    },
    queueType: {
      env: 'TRAVIS_WORKER_AMQP_QUEUE_TYPE',
      doc: 'Type of the queues mayfly declares when they do not exist yet: classic or quorum (a cluster); existing queues are used as they are (mayfly only)',
      default: 'classic',
      format(value: unknown) {
        if (!AMQP_QUEUE_TYPES.includes(value as (typeof AMQP_QUEUE_TYPES)[number])) throw new Error('must be classic or quorum');
      },
    } satisfies CoreSettingSchema<(typeof AMQP_QUEUE_TYPES)[number]>,
    deliveryLimit: wholeNumber(
      'TRAVIS_WORKER_AMQP_DELIVERY_LIMIT',
      DEFAULT_AMQP_DELIVERY_LIMIT,
      'Quorum job queue declared by mayfly: deliveries of one job before the broker moves it to the queue <QUEUE_NAME>.dead-letter (mayfly only)',
    ),
    logDeliveryTimeoutMs: duration('TRAVIS_WORKER_LOG_DELIVERY_TIMEOUT', '2m', 'Longest a log part or state update may wait for the broker, reconnects included, before the job is requeued (mayfly only)'),
  },

  file: {
    baseDir: text('TRAVIS_WORKER_BASE_DIR', './var/file-queue', 'Directory of the file queue (QUEUE_TYPE=file); travis defaults to the working directory'),
    pollingIntervalMs: duration('TRAVIS_WORKER_FILE_POLLING_INTERVAL', '5s', 'How often the file queue looks for new jobs'),
    echoLogs: flag('TRAVIS_WORKER_FILE_ECHO_LOGS', "Also print each job's log on the worker's output (file queue; mayfly only)", true),
  },

  buildApi: {
    uri: optionalUrl('TRAVIS_WORKER_BUILD_API_URI', 'Build script API endpoint, path included; a user name in it is sent as the token (empty: built-in script generator)', ['http', 'https']),
    insecureSkipVerify: flag('TRAVIS_WORKER_BUILD_API_INSECURE_SKIP_VERIFY', "Don't verify the build API's TLS certificate"),
    timeoutMs: duration('TRAVIS_WORKER_BUILD_API_TIMEOUT', '2m', 'Total time to get one build script, retries included (mayfly only)'),
    options: {
      // Passed to the build API as text (travis does not check them), but URLs all the same: shown masked.
      aptCache: optionalText('TRAVIS_WORKER_BUILD_APT_CACHE', 'APT cache (proxy) URL the build script uses', { url: true }),
      npmCache: optionalText('TRAVIS_WORKER_BUILD_NPM_CACHE', 'npm cache (proxy) URL the build script uses', { url: true }),
      paranoid: flag('TRAVIS_WORKER_BUILD_PARANOID', 'Build scripts remove sudo and other escalation paths'),
      fixResolvConf: flag('TRAVIS_WORKER_BUILD_FIX_RESOLV_CONF', 'Build scripts rewrite /etc/resolv.conf'),
      fixEtcHosts: flag('TRAVIS_WORKER_BUILD_FIX_ETC_HOSTS', 'Build scripts rewrite /etc/hosts'),
      cacheType: optionalText('TRAVIS_WORKER_BUILD_CACHE_TYPE', 'Build cache store for build scripts, e.g. s3'),
      cacheFetchTimeoutS: wholeSeconds('TRAVIS_WORKER_BUILD_CACHE_FETCH_TIMEOUT', '5m', 'Longest a build script may spend fetching its cache'),
      cachePushTimeoutS: wholeSeconds('TRAVIS_WORKER_BUILD_CACHE_PUSH_TIMEOUT', '5m', 'Longest a build script may spend pushing its cache'),
      cacheS3: {
        scheme: optionalText('TRAVIS_WORKER_BUILD_CACHE_S3_SCHEME', 'Build cache S3 scheme (http or https)'),
        region: optionalText('TRAVIS_WORKER_BUILD_CACHE_S3_REGION', 'Build cache S3 region'),
        bucket: optionalText('TRAVIS_WORKER_BUILD_CACHE_S3_BUCKET', 'Build cache S3 bucket'),
        accessKeyId: optionalText('TRAVIS_WORKER_BUILD_CACHE_S3_ACCESS_KEY_ID', 'Build cache S3 access key id'),
        secretAccessKey: optionalText('TRAVIS_WORKER_BUILD_CACHE_S3_SECRET_ACCESS_KEY', 'Build cache S3 secret access key', { sensitive: true }),
      },
    },
  },

  timeouts: {
    hardMs: duration('TRAVIS_WORKER_HARD_TIMEOUT', '50m', 'Longest a job may run before it is stopped'),
    logSilenceMs: duration('TRAVIS_WORKER_LOG_TIMEOUT', '10m', 'Longest a job may go without printing anything'),
    startupMs: duration('TRAVIS_WORKER_STARTUP_TIMEOUT', '4m', "Longest a job's machine may take to be ready"),
    scriptUploadMs: duration('TRAVIS_WORKER_SCRIPT_UPLOAD_TIMEOUT', '3m30s', 'Longest the build script upload may take'),
    initialSleepMs: duration('TRAVIS_WORKER_INITIAL_SLEEP', '1s', 'Pause before a job starts, so its log opens in order'),
    // The default drain leaves 5 minutes of a 50-minute stop budget (systemd/mayfly.service)
    // for requeueing, destroying instances and closing; a job that needs longer than 45
    // minutes is requeued and runs again elsewhere from the start.
    shutdownMs: duration('TRAVIS_WORKER_SHUTDOWN_TIMEOUT', '45m', "On SIGTERM, SIGINT or a notice from the cloud, how long running jobs may go on before they are requeued; a notice's deadline can make it shorter (mayfly only)"),
  },
  maxLogLength: {
    env: 'TRAVIS_WORKER_MAX_LOG_LENGTH',
    doc: 'Bytes of log a job may write before it is stopped',
    default: 4_500_000,
    format(value: unknown) {
      // The worker's closing message takes its room from this too.
      if (!Number.isInteger(value) || (value as number) < MIN_MAX_LOG_LENGTH) throw new Error(`must be a whole number of at least ${MIN_MAX_LOG_LENGTH}`);
    },
  } satisfies CoreSettingSchema<number>,
  payloadMaxBytes: wholeNumber('TRAVIS_WORKER_PAYLOAD_MAX_SIZE', DEFAULT_MAX_PAYLOAD_BYTES, 'Job payloads larger than this many bytes are rejected unread (mayfly only)'),

  defaults: {
    language: text('TRAVIS_WORKER_DEFAULT_LANGUAGE', 'default', 'language of a job that names none'),
    dist: text('TRAVIS_WORKER_DEFAULT_DIST', 'xenial', 'dist of a job that names none'),
    arch: text('TRAVIS_WORKER_DEFAULT_ARCH', 'amd64', 'arch of a job that names none'),
    group: text('TRAVIS_WORKER_DEFAULT_GROUP', 'stable', 'group of a job that names none'),
    os: text('TRAVIS_WORKER_DEFAULT_OS', 'linux', 'os of a job that names none'),
  },

  // Operating the worker (docs/operations.md).
  control: listenAddress(
    'TRAVIS_WORKER_REMOTE_CONTROLLER_ADDR',
    'host:port of the control API (/healthz, /ready, /worker, /pool, /metrics); :port means 127.0.0.1 (empty: off)',
  ),
  remoteAuth: credentials('TRAVIS_WORKER_REMOTE_CONTROLLER_AUTH', 'user:password the control API asks for (basic auth); empty: only /healthz and /ready answer'),
  debug: optionalGroup('port', {
    port: optionalPort(
      'TRAVIS_WORKER_PPROF_PORT',
      'Port of the debug listener (CPU and heap profiles for go tool pprof, heap snapshot, diagnostic report, /metrics), protected by REMOTE_CONTROLLER_AUTH; empty: off (mayfly only)',
    ),
    host: trimmed('TRAVIS_WORKER_PPROF_ADDR', '127.0.0.1', 'Address the debug listener binds (mayfly only)'),
    noAuth: flag(
      'TRAVIS_WORKER_PPROF_NO_AUTH',
      'Serve the debug listener without credentials when REMOTE_CONTROLLER_AUTH is empty: loopback only, and every process on this host (local and ssh jobs included) can then profile the worker; never the heap snapshot (mayfly only)',
    ),
  }),
  hooks: {
    start: command('TRAVIS_WORKER_START_HOOK', 'Command run before the worker takes jobs (split on spaces, no shell); a failure is logged'),
    stop: command('TRAVIS_WORKER_STOP_HOOK', 'Command run just before the worker exits (split on spaces, no shell); a failure is logged'),
  },
  heartbeat: optionalGroup('url', {
    url: optionalUrl('TRAVIS_WORKER_HEARTBEAT_URL', 'URL polled every 5 minutes; an answer of {"state":"down"} drains the worker (empty: off)', ['http', 'https']),
    authToken: secretOrFile('TRAVIS_WORKER_HEARTBEAT_URL_AUTH_TOKEN', 'Sent to HEARTBEAT_URL as "Authorization: token <value>"; file:///path reads it from that file'),
  }),

  // Reliability (docs/operations.md). Five failed starts in a row, with none working in
  // between, is far beyond the odd failed boot (a few percent of starts at
  // worst: 5 in a row by chance is rarer than 1 in 10^7), yet stops a pool of
  // any size within one round of starts instead of churning the whole queue.
  breaker: {
    threshold: wholeNumber('TRAVIS_WORKER_BREAKER_THRESHOLD', 5, 'After this many instance start failures in a row, take no jobs for a while (circuit breaker); 0: off (mayfly only)'),
    backoffMs: duration('TRAVIS_WORKER_BREAKER_BACKOFF', '30s', 'How long the circuit breaker first holds jobs back before trying one; doubles on each opening that follows (mayfly only)'),
    maxBackoffMs: duration('TRAVIS_WORKER_BREAKER_MAX_BACKOFF', '10m', 'The longest the circuit breaker holds jobs back before trying one (mayfly only)'),
  },
  requeueLimit: wholeNumber('TRAVIS_WORKER_REQUEUE_LIMIT', DEFAULT_REQUEUE_LIMIT, 'After this many requeues of the same job in a row, end it errored instead of requeueing it again; 0: no limit (mayfly only)'),
  reaper: {
    intervalMs: duration('TRAVIS_WORKER_REAPER_INTERVAL', '5m', 'How often to look for and destroy orphaned instances (expired lease, or left by an earlier run of this worker); 0: off (mayfly only)'),
    graceMs: duration('TRAVIS_WORKER_REAPER_GRACE', '10m', 'An instance of this worker that no job here holds is destroyed only once it is older than this (mayfly only)'),
  },

  // The host in its cloud (docs/fleet.md).
  host: {
    cloud: {
      env: 'TRAVIS_WORKER_HOST_CLOUD',
      doc: "Whose instance metadata to watch for the cloud's notices (spot interruption, scale-in, rebalance; preemption, maintenance): aws, gce, or none, which never probes a metadata address (mayfly only)",
      default: 'none',
      format(value: unknown) {
        if (!HOST_CLOUDS.includes(value as HostCloud)) throw new Error('must be aws, gce or none');
      },
    } satisfies CoreSettingSchema<HostCloud>,
    // Requeueing a job is one publish; destroying its instance one API call and a short wait:
    // 20 seconds covers both on a slow cloud API, and leaves 100 of a spot notice's 120 for jobs.
    noticeMarginMs: duration(
      'TRAVIS_WORKER_HOST_NOTICE_MARGIN',
      '20s',
      "Time kept before a notice's deadline to requeue the jobs still running and destroy their instances; jobs get what is left of the notice, at most SHUTDOWN_TIMEOUT (mayfly only)",
    ),
    noticePollMs: duration(
      'TRAVIS_WORKER_HOST_NOTICE_POLL_INTERVAL',
      '5s',
      "How often EC2's instance metadata is read for notices, and the pause before a failed read is retried on either cloud (mayfly only)",
    ),
    asgLifecycleHook: optionalText(
      'TRAVIS_WORKER_ASG_LIFECYCLE_HOOK',
      "The Auto Scaling group's termination lifecycle hook this host completes (CONTINUE) itself once it has drained, sending heartbeats meanwhile; needs HOST_CLOUD=aws (empty: none; mayfly only)",
    ),
    asgHeartbeatMs: duration(
      'TRAVIS_WORKER_ASG_LIFECYCLE_HEARTBEAT_INTERVAL',
      '1m',
      "How often the lifecycle action is extended (RecordLifecycleActionHeartbeat) while jobs finish; keep it below the hook's heartbeat timeout (mayfly only)",
    ),
  },
  // The host's lifetime in an autoscaled group (docs/fleet.md, "Host lifetime").
  lifetime: {
    idleShutdownAfterMs: duration(
      'TRAVIS_WORKER_IDLE_SHUTDOWN_AFTER',
      '0s',
      'Once no job has run for this long, drain and exit (and with HOST_TERMINATE, leave the group); 0: never (mayfly only)',
    ),
    maxJobs: wholeNumber('TRAVIS_WORKER_MAX_JOBS', 0, 'Take this many jobs in all, then drain and exit (and with HOST_TERMINATE, leave the group); 0: no limit (mayfly only)'),
    maxUptimeMs: duration(
      'TRAVIS_WORKER_MAX_UPTIME',
      '0s',
      'After running this long, take no more jobs, drain and exit (and with HOST_TERMINATE, leave the group); 0: no limit (mayfly only)',
    ),
    hostTerminate: flag(
      'TRAVIS_WORKER_HOST_TERMINATE',
      "After a drain for IDLE_SHUTDOWN_AFTER, MAX_JOBS or MAX_UPTIME, remove this host from its group, lowering the group's size (HOST_CLOUD aws: its Auto Scaling group, gce: its managed instance group) (mayfly only)",
    ),
    gceApiEndpoint: optionalUrl(
      'TRAVIS_WORKER_HOST_GCE_API_ENDPOINT',
      'Compute API base URL a GCE host calls to leave its managed instance group (HOST_TERMINATE); empty: https://compute.googleapis.com (mayfly only)',
      ['http', 'https'],
    ),
  },
  // The warm pool (docs/warm-pool.md).
  warmPool: {
    size: wholeNumber('TRAVIS_WORKER_WARM_POOL_SIZE', 0, 'Most instances booted ahead of jobs (idle and booting) kept ready for jobs of the same shape; 0: no warm pool (mayfly only)'),
    mode: oneOf(
      'TRAVIS_WORKER_WARM_POOL_MODE',
      ['fixed', 'adaptive'],
      'adaptive',
      'fixed: always WARM_POOL_SIZE instances, shared among the shapes seen since start; adaptive: as many as jobs of each shape came within WARM_POOL_WINDOW, none when none came (mayfly only)',
    ),
    maxAgeMs: duration('TRAVIS_WORKER_WARM_POOL_MAX_AGE', '30m', 'A warm instance idle this long after its boot began is replaced by a fresh one (mayfly only)'),
    windowMs: duration('TRAVIS_WORKER_WARM_POOL_WINDOW', '10m', 'Adaptive warm pool: how long a job counts towards keeping instances of its shape ready (mayfly only)'),
  },
} satisfies CoreSchema<CoreConfig>;

/** A core setting: where it sits in the config, and its declaration (which names its variables). */
export type CoreLeaf = SettingLeaf & { node: CoreSettingSchema<unknown> };

export const CORE_LEAVES = schemaLeaves(CORE_SETTINGS) as CoreLeaf[];

/** Every variable the core settings read, with what it is for: a leaf's own, and the file variable some have. */
export const CORE_VARIABLES: readonly { env: string; doc: string }[] = CORE_LEAVES.flatMap(({ node }) => [
  { env: node.env, doc: node.doc },
  ...(node.fileEnv ? [node.fileEnv] : []),
]);
