/**
 * The worker's configuration: the only module that reads `process.env`.
 * (Loader to be written: see loadConfig below.)
 */

/** Settings of the build API request (PROTOCOL.md, "Build API"). */
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
  };
  /** Bytes of log a job may write before it is stopped. */
  maxLogLength: number;
  /** Payloads larger than this many bytes are rejected unread. */
  payloadMaxBytes: number;
  defaults: { language: string; dist: string; arch: string; group: string; os: string };
  logLevel: 'debug' | 'info';
  /** Validated settings of the selected backend (`TRAVIS_WORKER_<PROVIDER>_*`). */
  backendSettings: Record<string, unknown>;
}
