/** travis-ci/worker settings mayfly accepts, so an existing env file still starts, but does not use. */

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
  { env: 'TRAVIS_WORKER_SKIP_SHUTDOWN_ON_LOG_TIMEOUT', doc: 'Keep VMs of log-timed-out jobs for debugging' },
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
export const COMMAND_LINE_ONLY = new Set(['TRAVIS_WORKER_ECHO_CONFIG', 'TRAVIS_WORKER_LIST_BACKEND_PROVIDERS']);
