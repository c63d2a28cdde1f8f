/**
 * travis-ci/worker settings mayfly accepts, so an existing env file still
 * starts, but does not use: each with why, which the one warning about it
 * says. A setting that gets implemented leaves its list here.
 */

/** A travis-ci/worker setting mayfly accepts but does not use. */
export interface IgnoredSetting {
  /** The variable (core), or the key after `TRAVIS_WORKER_<PROVIDER>_` (provider). */
  name: string;
  /** Why it has no effect in mayfly; ends the warning. */
  why: string;
  sensitive?: true;
  /** A travis boolean flag: `--log-metrics` alone means true. */
  switch?: true;
}

const LIBRATO = 'mayfly serves its metrics for Prometheus on the control API (/metrics) instead of sending them to Librato';
const SENTRY = 'mayfly has no Sentry client: errors are in its JSON log';
const POOLS = 'mayfly has no separate pools of log and state-update senders: each job sends its own';
const HTTP_QUEUE = 'mayfly has no http (job-board) queue';
const BUILD_TRACE = 'mayfly does not download build traces';
const TRACING = 'mayfly traces with OpenTelemetry instead (OTEL_EXPORTER_OTLP_ENDPOINT)';
const WRAPPER = "read by travis-worker's systemd wrapper script, not by the worker";

/** travis-ci/worker v6 core variables with no effect here. */
export const IGNORED_SETTINGS: readonly IgnoredSetting[] = [
  { name: 'TRAVIS_WORKER_LIBRATO_EMAIL', why: LIBRATO },
  { name: 'TRAVIS_WORKER_LIBRATO_TOKEN', why: LIBRATO, sensitive: true },
  { name: 'TRAVIS_WORKER_LIBRATO_SOURCE', why: LIBRATO },
  { name: 'TRAVIS_WORKER_SENTRY_DSN', why: SENTRY, sensitive: true },
  { name: 'TRAVIS_WORKER_SENTRY_HOOK_ERRORS', why: SENTRY, switch: true },
  { name: 'TRAVIS_WORKER_STATE_UPDATE_POOL_SIZE', why: POOLS },
  { name: 'TRAVIS_WORKER_LOG_POOL_SIZE', why: POOLS },
  { name: 'TRAVIS_WORKER_JOB_BOARD_URL', why: HTTP_QUEUE, sensitive: true },
  { name: 'TRAVIS_WORKER_TRAVIS_SITE', why: `${HTTP_QUEUE}; the gce backend's network tag is TRAVIS_WORKER_GCE_TRAVIS_SITE` },
  { name: 'TRAVIS_WORKER_HTTP_POLLING_INTERVAL', why: HTTP_QUEUE },
  { name: 'TRAVIS_WORKER_HTTP_REFRESH_CLAIM_INTERVAL', why: HTTP_QUEUE },
  { name: 'TRAVIS_WORKER_BUILD_TRACE_ENABLED', why: BUILD_TRACE, switch: true },
  { name: 'TRAVIS_WORKER_BUILD_TRACE_S3_BUCKET', why: BUILD_TRACE },
  { name: 'TRAVIS_WORKER_BUILD_TRACE_S3_KEY_PREFIX', why: BUILD_TRACE },
  { name: 'TRAVIS_WORKER_BUILD_TRACE_S3_REGION', why: BUILD_TRACE },
  { name: 'TRAVIS_WORKER_SKIP_SHUTDOWN_ON_LOG_TIMEOUT', why: "mayfly destroys every job's instance, a log-timed-out one too", switch: true },
  { name: 'TRAVIS_WORKER_SILENCE_METRICS', why: 'deprecated in travis-ci/worker too', switch: true },
  { name: 'TRAVIS_WORKER_LOG_METRICS', why: 'mayfly serves its metrics on the control API (/metrics) instead of printing them', switch: true },
  { name: 'TRAVIS_WORKER_UPDATE_IMAGES', why: 'it updates LXD images, and mayfly has no lxd backend', switch: true },
  { name: 'TRAVIS_WORKER_STACKDRIVER_TRACE_ACCOUNT_JSON', why: TRACING, sensitive: true },
  { name: 'TRAVIS_WORKER_STACKDRIVER_PROJECT_ID', why: TRACING },
  { name: 'TRAVIS_WORKER_OPENCENSUS_TRACING_ENABLED', why: TRACING, switch: true },
  { name: 'TRAVIS_WORKER_OPENCENSUS_SAMPLING_RATE', why: TRACING },
  { name: 'TRAVIS_WORKER_PRESTART_HOOK', why: WRAPPER },
  { name: 'TRAVIS_WORKER_SELF_IMAGE', why: WRAPPER },
];

const GCE_REDIS_RATE_LIMIT = 'mayfly limits its API calls per worker (RATE_LIMIT_MAX_CALLS, RATE_LIMIT_DURATION), not through Redis';
const EC2_HELP_ONLY = 'travis-ci/worker lists it in its help but never reads it';

/**
 * Per backend of mayfly, the settings travis' provider of the same name
 * reads that the backend accepts without using. One list per provider: when
 * a backend implements one, its entry goes (a test says which).
 */
export const IGNORED_PROVIDER_SETTINGS: Readonly<Record<string, readonly IgnoredSetting[]>> = {
  gce: [
    { name: 'RATE_LIMIT_REDIS_URL', why: GCE_REDIS_RATE_LIMIT, sensitive: true },
    { name: 'RATE_LIMIT_PREFIX', why: GCE_REDIS_RATE_LIMIT },
    { name: 'RATE_LIMIT_DYNAMIC_CONFIG', why: GCE_REDIS_RATE_LIMIT },
    { name: 'RATE_LIMIT_DYNAMIC_CONFIG_TTL', why: GCE_REDIS_RATE_LIMIT },
    { name: 'BACKOFF_RETRY_MAX', why: 'mayfly retries API calls with its own bounded backoff' },
    { name: 'DETERMINISTIC_HOSTNAME', why: 'mayfly names each VM travis-job-<random uuid>, as travis does by default' },
    { name: 'DISK_SIZE_WINDOWS', why: 'mayfly runs no Windows jobs on GCE: every VM gets DISK_SIZE' },
    { name: 'DEFAULT_LANGUAGE', why: "the job's default language is TRAVIS_WORKER_DEFAULT_LANGUAGE" },
  ],
  ec2: [
    { name: 'CPU_CREDIT_SPECIFICATION', why: EC2_HELP_ONLY },
    { name: 'IAM_INSTANCE_PROFILE', why: EC2_HELP_ONLY },
    { name: 'SECURITY_GROUPS', why: `${EC2_HELP_ONLY} (SECURITY_GROUP_IDS is the one it reads)` },
    { name: 'TAGS', why: `${EC2_HELP_ONLY} (CUSTOM_TAGS is the one it reads)` },
  ],
};

/**
 * travis-ci/worker providers mayfly has no backend for. An env file may
 * carry their settings beside the ones in use; they are accepted, with one
 * warning per provider.
 */
export const FOREIGN_PROVIDERS: readonly string[] = ['lxd', 'jupiterbrain', 'openstack', 'cloudbrain'];
