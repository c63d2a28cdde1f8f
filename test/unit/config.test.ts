import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { Backend, BackendDefinition } from '../../src/backend/contract.js';
import { echoConfig, listBackendProviders } from '../../src/config/echo.js';
import { IGNORED_SETTINGS } from '../../src/config/ignored.js';
import { loadConfig } from '../../src/config/load.js';
import { CORE_VARIABLES } from '../../src/config/schema.js';
import type { AnyBackendDefinition, WorkerConfig } from '../../src/config/types.js';
import { DEFAULT_MAX_PAYLOAD_BYTES } from '../../src/job/payload.js';
import { parseGoDuration } from '../../src/config/formats.js';
import { configErrorOf as loadError } from '../helpers/config-error.js';

/** Backends in these tests are never started: only their settings matter. */
function notStarted(): Backend {
  throw new Error('not used in config tests');
}

const local: BackendDefinition = {
  name: 'local',
  description: 'Runs each job on this machine',
  settings: {
    scriptsDir: { doc: 'Where build scripts are written', format: String, default: './var/local' },
  },
  create: notStarted,
};

interface CloudSettings {
  projectId: string;
  zone: string;
  apiToken: string;
  bootTimeout: number;
  preemptible: boolean;
  maxInstances: number;
  mode: string;
  ssh: { keyPath: string };
}

const cloud: BackendDefinition<CloudSettings> = {
  name: 'testcloud',
  description: 'A cloud that exists only in these tests',
  settings: {
    projectId: { doc: 'Project to start machines in', format: String, default: null },
    zone: { doc: 'Zone of the machines', format: String, default: 'us-central1-b' },
    apiToken: { doc: 'API token', format: String, default: 'default-token-value', sensitive: true },
    bootTimeout: { doc: 'Longest a boot may take', format: 'duration', default: parseGoDuration('2m') },
    preemptible: { doc: 'Use preemptible machines', format: Boolean, default: false },
    maxInstances: { doc: 'Most machines at once', format: 'nat', default: 10 },
    mode: { doc: 'How to boot', format: ['fast', 'safe'], default: 'safe' },
    ssh: { keyPath: { doc: 'SSH key file', format: String, default: '/etc/mayfly/key' } },
  },
  create: notStarted,
};

const BACKENDS = [local, cloud];

/** Loads and expects a ConfigError; returns its message. */
function configErrorOf(env: NodeJS.ProcessEnv, backends: readonly AnyBackendDefinition[] = BACKENDS): string {
  return loadError(env, backends);
}

/** Reads `export NAME="value"` lines back into an environment. */
function parseExports(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const match = /^export (\w+)="((?:[^"\\]|\\.)*)"$/.exec(line);
    if (match) env[match[1] as string] = (match[2] as string).replace(/\\(.)/g, '$1');
  }
  return env;
}

describe('loadConfig defaults', () => {
  it('gives travis-ci/worker defaults, with the embedded local backend and file queue', () => {
    const config = loadConfig(BACKENDS, {});
    expect(config).toEqual<WorkerConfig>({
      providerName: 'local',
      queueType: 'file',
      queueName: 'builds',
      poolSize: 1,
      hostname: hostname(),
      infra: '',
      progressType: '',
      amqp: {
        uri: 'amqp://',
        heartbeatMs: 10_000,
        consumerPriority: 0,
        insecure: false,
        sharding: false,
        reconnect: { initialMs: 1_000, maxMs: 30_000 },
        logDeliveryTimeoutMs: 120_000,
        queueType: 'classic',
        deliveryLimit: 20,
      },
      file: { baseDir: './var/file-queue', pollingIntervalMs: 5_000, echoLogs: true },
      buildApi: {
        insecureSkipVerify: false,
        timeoutMs: 120_000,
        options: {
          paranoid: false,
          fixResolvConf: false,
          fixEtcHosts: false,
          cacheFetchTimeoutS: 300,
          cachePushTimeoutS: 300,
          cacheS3: {},
        },
      },
      timeouts: { hardMs: 3_000_000, logSilenceMs: 600_000, startupMs: 240_000, scriptUploadMs: 210_000, initialSleepMs: 1_000, shutdownMs: 2_700_000 },
      maxLogLength: 4_500_000,
      payloadMaxBytes: DEFAULT_MAX_PAYLOAD_BYTES,
      defaults: { language: 'default', dist: 'xenial', arch: 'amd64', group: 'stable', os: 'linux' },
      logLevel: 'info',
      backendSettings: { scriptsDir: './var/local' },
      strictConfig: false,
      warnings: [],
      hooks: {},
      telemetry: {},
      breaker: { threshold: 5, backoffMs: 30_000, maxBackoffMs: 600_000 },
      requeueLimit: 10,
      reaper: { intervalMs: 300_000, graceMs: 600_000 },
      host: { cloud: 'none', noticeMarginMs: 20_000, noticePollMs: 5_000, asgHeartbeatMs: 60_000 },
      lifetime: { idleShutdownAfterMs: 0, maxJobs: 0, maxUptimeMs: 0, hostTerminate: false },
      warmPool: { size: 0, mode: 'adaptive', maxAgeMs: 1_800_000, windowMs: 600_000 },
    });
  });

  it('reads the host settings, and refuses a lifecycle hook off AWS', () => {
    const config = loadConfig(BACKENDS, {
      TRAVIS_WORKER_HOST_CLOUD: 'aws',
      TRAVIS_WORKER_HOST_NOTICE_MARGIN: '30s',
      TRAVIS_WORKER_HOST_NOTICE_POLL_INTERVAL: '2s',
      TRAVIS_WORKER_ASG_LIFECYCLE_HOOK: 'mayfly-drain',
      TRAVIS_WORKER_ASG_LIFECYCLE_HEARTBEAT_INTERVAL: '5m',
    });
    expect(config.host).toEqual({ cloud: 'aws', noticeMarginMs: 30_000, noticePollMs: 2_000, asgLifecycleHook: 'mayfly-drain', asgHeartbeatMs: 300_000 });
    expect(configErrorOf({ TRAVIS_WORKER_HOST_CLOUD: 'azure' })).toContain('TRAVIS_WORKER_HOST_CLOUD: must be aws, gce or none');
    expect(configErrorOf({ TRAVIS_WORKER_ASG_LIFECYCLE_HOOK: 'mayfly-drain' })).toContain('TRAVIS_WORKER_ASG_LIFECYCLE_HOOK: needs TRAVIS_WORKER_HOST_CLOUD=aws');
  });

  it('reads the host lifetime policy', () => {
    const config = loadConfig(BACKENDS, {
      TRAVIS_WORKER_IDLE_SHUTDOWN_AFTER: '10m',
      TRAVIS_WORKER_MAX_JOBS: '100',
      TRAVIS_WORKER_MAX_UPTIME: '24h',
    });
    expect(config.lifetime).toEqual({ idleShutdownAfterMs: 600_000, maxJobs: 100, maxUptimeMs: 86_400_000, hostTerminate: false });
    expect(configErrorOf({ TRAVIS_WORKER_MAX_JOBS: '-1' })).toContain('TRAVIS_WORKER_MAX_JOBS');
    expect(configErrorOf({ TRAVIS_WORKER_IDLE_SHUTDOWN_AFTER: 'soon' })).toContain('TRAVIS_WORKER_IDLE_SHUTDOWN_AFTER');
    // Leaving the group needs to know which cloud's group it is.
    expect(configErrorOf({ TRAVIS_WORKER_HOST_TERMINATE: 'true' })).toContain('TRAVIS_WORKER_HOST_TERMINATE: needs TRAVIS_WORKER_HOST_CLOUD=aws or gce');
    const leaving = loadConfig(BACKENDS, { TRAVIS_WORKER_HOST_TERMINATE: 'true', TRAVIS_WORKER_HOST_CLOUD: 'gce', TRAVIS_WORKER_HOST_GCE_API_ENDPOINT: 'http://127.0.0.1:9' });
    expect([leaving.host.cloud, leaving.lifetime.hostTerminate, leaving.lifetime.gceApiEndpoint]).toEqual(['gce', true, 'http://127.0.0.1:9']);
  });

  it('reads the warm pool settings, and refuses an age or window of zero while the pool is on', () => {
    const config = loadConfig(BACKENDS, {
      TRAVIS_WORKER_WARM_POOL_SIZE: '4',
      TRAVIS_WORKER_WARM_POOL_MODE: 'fixed',
      TRAVIS_WORKER_WARM_POOL_MAX_AGE: '5m',
      TRAVIS_WORKER_WARM_POOL_WINDOW: '1h',
    });
    expect(config.warmPool).toEqual({ size: 4, mode: 'fixed', maxAgeMs: 300_000, windowMs: 3_600_000 });
    expect(configErrorOf({ TRAVIS_WORKER_WARM_POOL_MODE: 'sometimes' })).toContain('TRAVIS_WORKER_WARM_POOL_MODE');
    expect(configErrorOf({ TRAVIS_WORKER_WARM_POOL_SIZE: '2', TRAVIS_WORKER_WARM_POOL_MAX_AGE: '0s' })).toContain(
      'TRAVIS_WORKER_WARM_POOL_MAX_AGE: must be longer than 0s while the warm pool is on',
    );
    expect(configErrorOf({ TRAVIS_WORKER_WARM_POOL_SIZE: '2', TRAVIS_WORKER_WARM_POOL_WINDOW: '0s' })).toContain(
      'TRAVIS_WORKER_WARM_POOL_WINDOW: must be longer than 0s while the adaptive warm pool is on',
    );
    // Off, the pool's other settings are not checked.
    expect(loadConfig(BACKENDS, { TRAVIS_WORKER_WARM_POOL_MAX_AGE: '0s' }).warmPool.size).toBe(0);
  });

  it('reads the circuit breaker and reaper settings, and refuses a maximum backoff below the first', () => {
    const config = loadConfig(BACKENDS, {
      TRAVIS_WORKER_BREAKER_THRESHOLD: '3',
      TRAVIS_WORKER_BREAKER_BACKOFF: '10s',
      TRAVIS_WORKER_BREAKER_MAX_BACKOFF: '1h',
      TRAVIS_WORKER_REAPER_INTERVAL: '0',
      TRAVIS_WORKER_REAPER_GRACE: '15m',
    });
    expect([config.breaker, config.reaper]).toEqual([
      { threshold: 3, backoffMs: 10_000, maxBackoffMs: 3_600_000 },
      { intervalMs: 0, graceMs: 900_000 },
    ]);
    expect(configErrorOf({ TRAVIS_WORKER_BREAKER_BACKOFF: '5m', TRAVIS_WORKER_BREAKER_MAX_BACKOFF: '1m' })).toContain(
      'TRAVIS_WORKER_BREAKER_MAX_BACKOFF: must be at least TRAVIS_WORKER_BREAKER_BACKOFF',
    );
  });

  it('ignores variables that are no setting of its own', () => {
    const config = loadConfig(BACKENDS, { PATH: '/bin', TRAVIS_WORKERS: 'x' });
    expect(config.poolSize).toBe(1);
    expect(config.warnings).toEqual([]);
  });

  it('maps each setting into WorkerConfig', () => {
    const config = loadConfig(BACKENDS, {
      TRAVIS_WORKER_QUEUE_TYPE: 'amqp',
      TRAVIS_WORKER_QUEUE_NAME: 'builds.gce',
      TRAVIS_WORKER_POOL_SIZE: '12',
      TRAVIS_WORKER_HOSTNAME: 'worker-7',
      TRAVIS_WORKER_INFRA: 'gce',
      TRAVIS_WORKER_DEBUG: 'true',
      TRAVIS_WORKER_AMQP_URI: 'amqps://worker:pw@rabbit.example.com/ci',
      TRAVIS_WORKER_LOGS_AMQP_URI: 'amqp://logs.example.com',
      TRAVIS_WORKER_AMQP_HEARTBEAT: '30s',
      TRAVIS_WORKER_AMQP_CONSUMER_PRIORITY: '-5',
      TRAVIS_WORKER_AMQP_INSECURE: 'yes',
      TRAVIS_WORKER_RABBITMQ_SHARDING: '1',
      TRAVIS_WORKER_BASE_DIR: '/srv/queue',
      TRAVIS_WORKER_FILE_POLLING_INTERVAL: '250ms',
      TRAVIS_WORKER_FILE_ECHO_LOGS: 'no',
      TRAVIS_WORKER_BUILD_API_URI: 'https://tok@build.example.com/script',
      TRAVIS_WORKER_BUILD_API_INSECURE_SKIP_VERIFY: 'TRUE',
      TRAVIS_WORKER_BUILD_API_TIMEOUT: '90s',
      TRAVIS_WORKER_LOG_TIMEOUT: '20m',
      TRAVIS_WORKER_STARTUP_TIMEOUT: '8m',
      TRAVIS_WORKER_INITIAL_SLEEP: '0',
      TRAVIS_WORKER_MAX_LOG_LENGTH: '10000',
      TRAVIS_WORKER_PAYLOAD_MAX_SIZE: '2048',
      TRAVIS_WORKER_DEFAULT_LANGUAGE: 'ruby',
      TRAVIS_WORKER_DEFAULT_DIST: 'focal',
      TRAVIS_WORKER_DEFAULT_ARCH: 'arm64',
      TRAVIS_WORKER_DEFAULT_GROUP: 'edge',
      TRAVIS_WORKER_DEFAULT_OS: 'osx',
      TRAVIS_WORKER_BUILD_APT_CACHE: 'http://apt.example.com',
      TRAVIS_WORKER_BUILD_NPM_CACHE: 'http://npm.example.com',
      TRAVIS_WORKER_BUILD_PARANOID: 'true',
      TRAVIS_WORKER_BUILD_FIX_RESOLV_CONF: 'true',
      TRAVIS_WORKER_BUILD_FIX_ETC_HOSTS: 'true',
      TRAVIS_WORKER_BUILD_CACHE_TYPE: 's3',
      TRAVIS_WORKER_BUILD_CACHE_FETCH_TIMEOUT: '1m30.9s',
      TRAVIS_WORKER_BUILD_CACHE_PUSH_TIMEOUT: '10m',
      TRAVIS_WORKER_BUILD_CACHE_S3_SCHEME: 'https',
      TRAVIS_WORKER_BUILD_CACHE_S3_REGION: 'us-east-1',
      TRAVIS_WORKER_BUILD_CACHE_S3_BUCKET: 'cache',
      TRAVIS_WORKER_BUILD_CACHE_S3_ACCESS_KEY_ID: 'AKIA',
      TRAVIS_WORKER_BUILD_CACHE_S3_SECRET_ACCESS_KEY: 'shh',
    });
    expect(config).toMatchObject({
      queueType: 'amqp',
      queueName: 'builds.gce',
      poolSize: 12,
      hostname: 'worker-7',
      infra: 'gce',
      logLevel: 'debug',
      amqp: {
        uri: 'amqps://worker:pw@rabbit.example.com/ci',
        logsUri: 'amqp://logs.example.com',
        heartbeatMs: 30_000,
        consumerPriority: -5,
        insecure: true,
        sharding: true,
      },
      file: { baseDir: '/srv/queue', pollingIntervalMs: 250, echoLogs: false },
      buildApi: {
        uri: 'https://tok@build.example.com/script',
        insecureSkipVerify: true,
        timeoutMs: 90_000,
        options: {
          aptCache: 'http://apt.example.com',
          npmCache: 'http://npm.example.com',
          paranoid: true,
          fixResolvConf: true,
          fixEtcHosts: true,
          cacheType: 's3',
          cacheFetchTimeoutS: 90,
          cachePushTimeoutS: 600,
          cacheS3: { scheme: 'https', region: 'us-east-1', bucket: 'cache', accessKeyId: 'AKIA', secretAccessKey: 'shh' },
        },
      },
      timeouts: { logSilenceMs: 1_200_000, startupMs: 480_000, initialSleepMs: 0 },
      maxLogLength: 10000,
      payloadMaxBytes: 2048,
      defaults: { language: 'ruby', dist: 'focal', arch: 'arm64', group: 'edge', os: 'osx' },
    });
  });

  it('leaves unset settings out, and a group whose switch is unset, rather than holding them as empty', () => {
    const config = loadConfig(BACKENDS, { TRAVIS_WORKER_PPROF_ADDR: '127.0.0.2', TRAVIS_WORKER_HEARTBEAT_URL_AUTH_TOKEN: 'tok', TRAVIS_WORKER_LOGS_AMQP_URI: '' });
    expect(['debug', 'heartbeat', 'control', 'remoteAuth'].filter((key) => key in config)).toEqual([]);
    expect(['logsUri', 'tlsCert', 'logsTlsCert'].filter((key) => key in config.amqp)).toEqual([]);
    expect(Object.keys(config.buildApi.options.cacheS3)).toEqual([]);
    expect(config.hooks).toEqual({});
  });

  it("uses this machine's host name when HOSTNAME is empty", () => {
    expect(loadConfig(BACKENDS, { TRAVIS_WORKER_HOSTNAME: '' }).hostname).toBe(hostname());
  });
});

describe('Go durations', () => {
  it.each([
    ['50m', 3_000_000],
    ['3m30s', 210_000],
    ['500ms', 500],
    ['1h2m3.5s', 3_723_500],
    ['0', 0],
  ])('reads %s as %d ms', (text, ms) => {
    expect(loadConfig(BACKENDS, { TRAVIS_WORKER_HARD_TIMEOUT: text }).timeouts.hardMs).toBe(ms);
  });

  it.each(['30', '5x', '', '-1s', '1 h'])('rejects %j, naming the variable', (text) => {
    expect(configErrorOf({ TRAVIS_WORKER_HARD_TIMEOUT: text })).toMatch(/TRAVIS_WORKER_HARD_TIMEOUT: .*duration/);
  });

  // Past 2^31-1 ms a Node.js timer fires after 1 ms: 720h would time out every job at once.
  it.each(['TRAVIS_WORKER_HARD_TIMEOUT', 'TRAVIS_WORKER_SHUTDOWN_TIMEOUT', 'TRAVIS_WORKER_LOG_TIMEOUT'])(
    'refuses %s=720h, longer than a timer can wait, naming the variable',
    (variable) => {
      expect(configErrorOf({ [variable]: '720h' })).toMatch(new RegExp(`${variable}: must be at most 596h31m23.647s`));
    },
  );

  it('accepts the longest duration a timer can wait, in core and backend settings', () => {
    const config = loadConfig(BACKENDS, {
      TRAVIS_WORKER_PROVIDER_NAME: 'testcloud',
      TRAVIS_WORKER_TESTCLOUD_PROJECT_ID: 'p',
      TRAVIS_WORKER_HARD_TIMEOUT: '596h31m23.647s',
      TRAVIS_WORKER_TESTCLOUD_BOOT_TIMEOUT: '596h31m23.647s',
    });
    expect(config.timeouts.hardMs).toBe(2 ** 31 - 1);
    expect(config.backendSettings.bootTimeout).toBe(2 ** 31 - 1);
    expect(configErrorOf({ TRAVIS_WORKER_PROVIDER_NAME: 'testcloud', TRAVIS_WORKER_TESTCLOUD_PROJECT_ID: 'p', TRAVIS_WORKER_TESTCLOUD_BOOT_TIMEOUT: '596h31m23.648s' })).toMatch(
      /TRAVIS_WORKER_TESTCLOUD_BOOT_TIMEOUT: must be at most 596h31m23.647s/,
    );
  });
});

describe('bad values', () => {
  it('names an unknown variable and suggests the closest known one (strict)', () => {
    const message = configErrorOf({ TRAVIS_WORKER_STRICT_CONFIG: 'true', TRAVIS_WORKER_POOLSIZE: '3' });
    expect(message).toContain('TRAVIS_WORKER_POOLSIZE: unknown setting');
    expect(message).toContain('did you mean TRAVIS_WORKER_POOL_SIZE?');
  });

  it('suggests nothing when no known name is close (strict)', () => {
    const message = configErrorOf({ TRAVIS_WORKER_STRICT_CONFIG: 'true', TRAVIS_WORKER_FROBNICATE: '1' });
    expect(message).toContain('TRAVIS_WORKER_FROBNICATE: unknown setting');
    expect(message).not.toContain('did you mean');
  });

  it.each([
    ['TRAVIS_WORKER_POOL_SIZE', 'abc'],
    ['TRAVIS_WORKER_POOL_SIZE', '2.5'],
    ['TRAVIS_WORKER_POOL_SIZE', '0'],
    ['TRAVIS_WORKER_POOL_SIZE', '1001'],
    ['TRAVIS_WORKER_POOL_SIZE', '12abc'],
    ['TRAVIS_WORKER_POOL_SIZE', ''],
    ['TRAVIS_WORKER_MAX_LOG_LENGTH', '-1'],
    ['TRAVIS_WORKER_MAX_LOG_LENGTH', '4095'],
    ['TRAVIS_WORKER_AMQP_CONSUMER_PRIORITY', '1.5'],
    ['TRAVIS_WORKER_PAYLOAD_MAX_SIZE', '1MB'],
  ])('rejects %s=%j as a whole number', (variable, value) => {
    expect(configErrorOf({ [variable]: value })).toContain(`${variable}: `);
  });

  it.each([
    ['true', true],
    ['TRUE', true],
    ['1', true],
    ['yes', true],
    ['Yes', true],
    ['false', false],
    ['0', false],
    ['no', false],
    ['NO', false],
    ['', false],
  ])('reads the boolean %j as %s', (text, value) => {
    expect(loadConfig(BACKENDS, { TRAVIS_WORKER_AMQP_INSECURE: text }).amqp.insecure).toBe(value);
  });

  it.each(['maybe', 'on', '2'])('rejects the boolean %j, naming the variable', (text) => {
    expect(configErrorOf({ TRAVIS_WORKER_BUILD_PARANOID: text })).toMatch(/TRAVIS_WORKER_BUILD_PARANOID: must be true or false/);
  });

  it.each([
    ['TRAVIS_WORKER_AMQP_URI', 'http://rabbit.example.com'],
    ['TRAVIS_WORKER_AMQP_URI', 'not a url'],
    ['TRAVIS_WORKER_AMQP_URI', ''],
    ['TRAVIS_WORKER_LOGS_AMQP_URI', 'https://logs.example.com'],
    ['TRAVIS_WORKER_BUILD_API_URI', 'ftp://build.example.com/script'],
    ['TRAVIS_WORKER_BUILD_API_URI', 'build.example.com/script'],
  ])('rejects %s=%j as a URL of the wrong kind', (variable, value) => {
    expect(configErrorOf({ [variable]: value })).toMatch(new RegExp(`${variable}: must be a URL starting with`));
  });

  it('accepts amqps brokers and http build APIs', () => {
    const config = loadConfig(BACKENDS, {
      TRAVIS_WORKER_AMQP_URI: 'amqps://u:p@rabbit:5671/vhost',
      TRAVIS_WORKER_BUILD_API_URI: 'http://127.0.0.1:4000/script',
    });
    expect(config.amqp.uri).toBe('amqps://u:p@rabbit:5671/vhost');
    expect(config.buildApi.uri).toBe('http://127.0.0.1:4000/script');
  });

  it('never repeats a password from a rejected URL', () => {
    const message = configErrorOf({ TRAVIS_WORKER_AMQP_URI: 'http://guest:hunter2@rabbit.example.com' });
    expect(message).toContain('TRAVIS_WORKER_AMQP_URI');
    expect(message).not.toContain('hunter2');
  });

  it('takes the nodes of a cluster comma-separated, and names a bad one by its place without quoting it', () => {
    const nodes = 'amqp://u:p@rabbit-1:5672/ci, amqp://u:p@rabbit-2:5672/ci';
    expect(loadConfig(BACKENDS, { TRAVIS_WORKER_AMQP_URI: nodes, TRAVIS_WORKER_LOGS_AMQP_URI: nodes }).amqp).toMatchObject({ uri: nodes, logsUri: nodes });

    const message = configErrorOf({ TRAVIS_WORKER_AMQP_URI: 'amqp://u:p@rabbit-1/ci,http://u:hunter2@rabbit-2/ci' });
    expect(message).toMatch(/TRAVIS_WORKER_AMQP_URI: URL 2 of 2 must be a URL starting with amqp:\/\/ or amqps:\/\//);
    expect(message).not.toContain('hunter2');
    expect(configErrorOf({ TRAVIS_WORKER_LOGS_AMQP_URI: 'amqp://logs-1,logs-2' })).toMatch(/TRAVIS_WORKER_LOGS_AMQP_URI: URL 2 of 2 must be/);
  });

  it('takes classic or quorum as the AMQP queue type', () => {
    expect(loadConfig(BACKENDS, { TRAVIS_WORKER_AMQP_QUEUE_TYPE: 'quorum', TRAVIS_WORKER_AMQP_DELIVERY_LIMIT: '7' }).amqp).toMatchObject({
      queueType: 'quorum',
      deliveryLimit: 7,
    });
    expect(configErrorOf({ TRAVIS_WORKER_AMQP_QUEUE_TYPE: 'stream' })).toMatch(/TRAVIS_WORKER_AMQP_QUEUE_TYPE: must be classic or quorum/);
  });

  it('says the http queue type is not supported', () => {
    expect(configErrorOf({ TRAVIS_WORKER_QUEUE_TYPE: 'http' })).toMatch(/TRAVIS_WORKER_QUEUE_TYPE: the http queue type .* not supported/);
    expect(configErrorOf({ TRAVIS_WORKER_QUEUE_TYPE: 'sqs' })).toMatch(/TRAVIS_WORKER_QUEUE_TYPE: must be amqp or file/);
  });

  it('names an unknown provider and the known ones', () => {
    expect(configErrorOf({ TRAVIS_WORKER_PROVIDER_NAME: 'gce' })).toContain(
      'TRAVIS_WORKER_PROVIDER_NAME: unknown provider "gce" (known: local, testcloud)',
    );
  });

  it('reports every problem at once', () => {
    const message = configErrorOf({
      TRAVIS_WORKER_POOL_SIZE: 'x',
      TRAVIS_WORKER_HARD_TIMEOUT: '30',
      TRAVIS_WORKER_NOPE: '1',
      TRAVIS_WORKER_PROVIDER_NAME: 'gce',
      TRAVIS_WORKER_STRICT_CONFIG: 'true',
    });
    expect(message).toContain('4 problems');
    for (const variable of ['POOL_SIZE', 'HARD_TIMEOUT', 'NOPE', 'PROVIDER_NAME']) {
      expect(message).toContain(`TRAVIS_WORKER_${variable}: `);
    }
  });
});

describe('certificates', () => {
  let dir: string | undefined;
  afterEach(() => {
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
    dir = undefined;
  });

  it('reads AMQP_TLS_CERT_PATH at load and keeps an inline AMQP_TLS_CERT too', () => {
    dir = mkdtempSync(join(tmpdir(), 'mayfly-config-'));
    const path = join(dir, 'ca.pem');
    writeFileSync(path, 'FILE-PEM\n');
    const config = loadConfig(BACKENDS, {
      TRAVIS_WORKER_AMQP_TLS_CERT: 'INLINE-PEM',
      TRAVIS_WORKER_AMQP_TLS_CERT_PATH: path,
      TRAVIS_WORKER_LOGS_AMQP_TLS_CERT_PATH: path,
    });
    expect(config.amqp.tlsCert).toBe('INLINE-PEM\nFILE-PEM\n');
    expect(config.amqp.logsTlsCert).toBe('FILE-PEM\n');
  });

  it('names the variable when the certificate file is unreadable', () => {
    dir = mkdtempSync(join(tmpdir(), 'mayfly-config-'));
    const message = configErrorOf({ TRAVIS_WORKER_LOGS_AMQP_TLS_CERT_PATH: join(dir, 'missing.pem') });
    expect(message).toContain('TRAVIS_WORKER_LOGS_AMQP_TLS_CERT_PATH: cannot read');
  });
});

describe('ignored travis settings', () => {
  it('accepts them and lists the ones set', () => {
    const config = loadConfig(BACKENDS, {
      TRAVIS_WORKER_SENTRY_DSN: 'https://key@sentry.example.com/1',
      TRAVIS_WORKER_LIBRATO_TOKEN: 'tok',
      TRAVIS_WORKER_STATE_UPDATE_POOL_SIZE: 'not even a number',
    });
    expect(config.warnings.flatMap((warning) => warning.variables).sort()).toEqual([
      'TRAVIS_WORKER_LIBRATO_TOKEN',
      'TRAVIS_WORKER_SENTRY_DSN',
      'TRAVIS_WORKER_STATE_UPDATE_POOL_SIZE',
    ]);
  });

  it('marks their secrets sensitive', () => {
    const sensitive = IGNORED_SETTINGS.filter((setting) => setting.sensitive === true).map((setting) => setting.name);
    expect(sensitive).toEqual(expect.arrayContaining(['TRAVIS_WORKER_LIBRATO_TOKEN', 'TRAVIS_WORKER_SENTRY_DSN']));
  });

  it('does not overlap the core settings', () => {
    const core = new Set(CORE_VARIABLES.map((variable) => variable.env));
    expect(IGNORED_SETTINGS.filter((setting) => core.has(setting.name))).toEqual([]);
  });
});

describe('backend settings', () => {
  const base = { TRAVIS_WORKER_PROVIDER_NAME: 'testcloud', TRAVIS_WORKER_TESTCLOUD_PROJECT_ID: 'ci-project' };

  it('reads the selected backend from TRAVIS_WORKER_<NAME>_<KEY>', () => {
    const config = loadConfig(BACKENDS, {
      ...base,
      TRAVIS_WORKER_TESTCLOUD_BOOT_TIMEOUT: '90s',
      TRAVIS_WORKER_TESTCLOUD_PREEMPTIBLE: 'yes',
      TRAVIS_WORKER_TESTCLOUD_MAX_INSTANCES: '3',
      TRAVIS_WORKER_TESTCLOUD_SSH_KEY_PATH: '/keys/id',
    });
    expect(config.providerName).toBe('testcloud');
    expect(config.backendSettings).toEqual({
      projectId: 'ci-project',
      zone: 'us-central1-b',
      apiToken: 'default-token-value',
      bootTimeout: 90_000,
      preemptible: true,
      maxInstances: 3,
      mode: 'safe',
      ssh: { keyPath: '/keys/id' },
    });
  });

  it('accepts the provider name in any case', () => {
    expect(loadConfig(BACKENDS, { ...base, TRAVIS_WORKER_PROVIDER_NAME: 'TestCloud' }).providerName).toBe('testcloud');
  });

  it('names a required setting that is missing or empty', () => {
    expect(configErrorOf({ TRAVIS_WORKER_PROVIDER_NAME: 'testcloud' })).toContain(
      'TRAVIS_WORKER_TESTCLOUD_PROJECT_ID: is required',
    );
    expect(configErrorOf({ ...base, TRAVIS_WORKER_TESTCLOUD_PROJECT_ID: ' ' })).toContain(
      'TRAVIS_WORKER_TESTCLOUD_PROJECT_ID: is required',
    );
  });

  it.each([
    ['TRAVIS_WORKER_TESTCLOUD_BOOT_TIMEOUT', '120'],
    ['TRAVIS_WORKER_TESTCLOUD_PREEMPTIBLE', 'sometimes'],
    ['TRAVIS_WORKER_TESTCLOUD_MAX_INSTANCES', '-2'],
    ['TRAVIS_WORKER_TESTCLOUD_MAX_INSTANCES', 'ten'],
    ['TRAVIS_WORKER_TESTCLOUD_MODE', 'reckless'],
  ])('names the variable of a bad value: %s=%j', (variable, value) => {
    const message = configErrorOf({ ...base, [variable]: value });
    expect(message).toContain(`${variable}: `);
  });

  it("rewrites convict's messages to name the variable, not the schema key", () => {
    const message = configErrorOf({ ...base, TRAVIS_WORKER_TESTCLOUD_MODE: 'reckless' });
    expect(message).toBe(
      'invalid configuration: TRAVIS_WORKER_TESTCLOUD_MODE: must be one of the possible values: ["fast","safe"] (got "reckless")',
    );
  });

  it('suggests the right name for a misspelt backend setting', () => {
    expect(configErrorOf({ ...base, TRAVIS_WORKER_STRICT_CONFIG: 'true', TRAVIS_WORKER_TESTCLOUD_ZONES: 'a' })).toContain(
      'TRAVIS_WORKER_TESTCLOUD_ZONES: unknown setting (did you mean TRAVIS_WORKER_TESTCLOUD_ZONE?)',
    );
  });

  it("accepts another known backend's variables without validating them", () => {
    const config = loadConfig(BACKENDS, {
      TRAVIS_WORKER_PROVIDER_NAME: 'local',
      TRAVIS_WORKER_TESTCLOUD_MAX_INSTANCES: 'not a number',
      TRAVIS_WORKER_TESTCLOUD_ZONE: 'europe-west1-b',
    });
    expect(config.backendSettings).toEqual({ scriptsDir: './var/local' });
  });

  it('does not quote the value of a sensitive setting in an error', () => {
    const secretive: BackendDefinition = {
      name: 'secretive',
      description: 'has a structured secret',
      settings: { credentials: { doc: 'JSON credentials', format: Object, default: {}, sensitive: true } },
      create: notStarted,
    };
    const message = configErrorOf(
      { TRAVIS_WORKER_PROVIDER_NAME: 'secretive', TRAVIS_WORKER_SECRETIVE_CREDENTIALS: '{"key": topsecret' },
      [secretive],
    );
    expect(message).toContain('TRAVIS_WORKER_SECRETIVE_CREDENTIALS');
    expect(message).not.toContain('topsecret');
  });
});

describe('backend setting families', () => {
  interface ImageSettings {
    imageDefault: string;
    images: Record<string, string>;
    tokens: Record<string, string>;
  }
  const imaged: BackendDefinition<ImageSettings, 'images' | 'tokens'> = {
    name: 'imaged',
    description: 'picks an image per language',
    settings: { imageDefault: { doc: 'image when no other matches', format: String, default: 'base' } },
    settingFamilies: {
      images: { prefix: 'IMAGE', doc: 'image for jobs of language <NAME>' },
      tokens: { prefix: 'TOKEN', doc: 'a token per tenant', sensitive: true },
    },
    create: notStarted,
  };
  const backends = [local, imaged];

  it('collects TRAVIS_WORKER_<BACKEND>_<PREFIX>_<NAME> into a map keyed by the lower-case name, next to declared settings', () => {
    const config = loadConfig(backends, {
      TRAVIS_WORKER_PROVIDER_NAME: 'imaged',
      TRAVIS_WORKER_IMAGED_IMAGE_DEFAULT: 'travis-default',
      TRAVIS_WORKER_IMAGED_IMAGE_RUBY: 'travis-ruby',
      TRAVIS_WORKER_IMAGED_IMAGE_NODE_JS: 'travis-node',
    });
    expect(config.backendSettings).toEqual({
      imageDefault: 'travis-default',
      images: { ruby: 'travis-ruby', node_js: 'travis-node' },
      tokens: {},
    });
  });

  it("accepts another backend's family variables and still rejects unknown ones", () => {
    expect(loadConfig(backends, { TRAVIS_WORKER_IMAGED_IMAGE_GO: 'x' }).backendSettings).toEqual({ scriptsDir: './var/local' });
    expect(configErrorOf({ TRAVIS_WORKER_STRICT_CONFIG: 'true', TRAVIS_WORKER_IMAGED_IMAGES_GO: 'x' }, backends)).toContain(
      'TRAVIS_WORKER_IMAGED_IMAGES_GO: unknown setting',
    );
  });

  it('echoes family members, masking sensitive ones, and lists the family', () => {
    const config = loadConfig(backends, {
      TRAVIS_WORKER_PROVIDER_NAME: 'imaged',
      TRAVIS_WORKER_IMAGED_IMAGE_RUBY: 'travis-ruby',
      TRAVIS_WORKER_IMAGED_TOKEN_ACME: 'acme-s3cr3t',
    });
    const echoed = echoConfig(config, backends);
    expect(echoed).toContain('export TRAVIS_WORKER_IMAGED_IMAGE_RUBY="travis-ruby"');
    expect(echoed).toContain('export TRAVIS_WORKER_IMAGED_TOKEN_ACME="********"');
    expect(echoed).not.toContain('acme-s3cr3t');
    expect(listBackendProviders(backends)).toContain('TRAVIS_WORKER_IMAGED_IMAGE_<NAME>\n      image for jobs of language <NAME>');
  });
});

/** --echo-config of the configuration in the test that uses it, recorded before the core schema was nested. */
const FULL_ECHO = `# mayfly effective configuration (secrets masked)
export TRAVIS_WORKER_AMQP_CONSUMER_PRIORITY="0"
export TRAVIS_WORKER_AMQP_DELIVERY_LIMIT="20"
export TRAVIS_WORKER_AMQP_HEARTBEAT="10s"
export TRAVIS_WORKER_AMQP_INSECURE="false"
export TRAVIS_WORKER_AMQP_QUEUE_TYPE="classic"
export TRAVIS_WORKER_AMQP_RECONNECT_BACKOFF="1s"
export TRAVIS_WORKER_AMQP_RECONNECT_MAX_BACKOFF="30s"
# TRAVIS_WORKER_AMQP_TLS_CERT: 59 characters of PEM (not shown)
export TRAVIS_WORKER_AMQP_URI="amqp://****:****@rabbit.example.com/vhost"
export TRAVIS_WORKER_ASG_LIFECYCLE_HEARTBEAT_INTERVAL="1m0s"
export TRAVIS_WORKER_ASG_LIFECYCLE_HOOK=""
export TRAVIS_WORKER_BASE_DIR="./var/file-queue"
export TRAVIS_WORKER_BREAKER_BACKOFF="30s"
export TRAVIS_WORKER_BREAKER_MAX_BACKOFF="10m0s"
export TRAVIS_WORKER_BREAKER_THRESHOLD="5"
export TRAVIS_WORKER_BUILD_API_INSECURE_SKIP_VERIFY="false"
export TRAVIS_WORKER_BUILD_API_TIMEOUT="2m0s"
export TRAVIS_WORKER_BUILD_API_URI="https://****@build.example.com/script"
export TRAVIS_WORKER_BUILD_APT_CACHE="http://****:****@apt.example.com/"
export TRAVIS_WORKER_BUILD_CACHE_FETCH_TIMEOUT="1m30s"
export TRAVIS_WORKER_BUILD_CACHE_PUSH_TIMEOUT="5m0s"
export TRAVIS_WORKER_BUILD_CACHE_S3_ACCESS_KEY_ID="AKIA"
export TRAVIS_WORKER_BUILD_CACHE_S3_BUCKET="cache"
export TRAVIS_WORKER_BUILD_CACHE_S3_REGION=""
export TRAVIS_WORKER_BUILD_CACHE_S3_SCHEME=""
export TRAVIS_WORKER_BUILD_CACHE_S3_SECRET_ACCESS_KEY="********"
export TRAVIS_WORKER_BUILD_CACHE_TYPE="s3"
export TRAVIS_WORKER_BUILD_FIX_ETC_HOSTS="false"
export TRAVIS_WORKER_BUILD_FIX_RESOLV_CONF="false"
export TRAVIS_WORKER_BUILD_NPM_CACHE=""
export TRAVIS_WORKER_BUILD_PARANOID="false"
export TRAVIS_WORKER_DEBUG="true"
export TRAVIS_WORKER_DEFAULT_ARCH="amd64"
export TRAVIS_WORKER_DEFAULT_DIST="xenial"
export TRAVIS_WORKER_DEFAULT_GROUP="stable"
export TRAVIS_WORKER_DEFAULT_LANGUAGE="default"
export TRAVIS_WORKER_DEFAULT_OS="linux"
export TRAVIS_WORKER_FILE_ECHO_LOGS="false"
export TRAVIS_WORKER_FILE_POLLING_INTERVAL="5s"
export TRAVIS_WORKER_HARD_TIMEOUT="1h2m3.5s"
export TRAVIS_WORKER_HEARTBEAT_URL="https://****:****@supervisor.example.com/hb"
export TRAVIS_WORKER_HEARTBEAT_URL_AUTH_TOKEN="********"
export TRAVIS_WORKER_HOSTNAME="worker-7"
export TRAVIS_WORKER_HOST_CLOUD="none"
export TRAVIS_WORKER_HOST_GCE_API_ENDPOINT=""
export TRAVIS_WORKER_HOST_NOTICE_MARGIN="20s"
export TRAVIS_WORKER_HOST_NOTICE_POLL_INTERVAL="5s"
export TRAVIS_WORKER_HOST_TERMINATE="false"
export TRAVIS_WORKER_IDLE_SHUTDOWN_AFTER="0s"
export TRAVIS_WORKER_INFRA="gce"
export TRAVIS_WORKER_INITIAL_SLEEP="1s"
# TRAVIS_WORKER_LOGS_AMQP_TLS_CERT: 59 characters of PEM (not shown)
export TRAVIS_WORKER_LOGS_AMQP_URI="amqps://****:****@logs.example.com"
export TRAVIS_WORKER_LOG_DELIVERY_TIMEOUT="2m0s"
export TRAVIS_WORKER_LOG_TIMEOUT="10m0s"
export TRAVIS_WORKER_MAX_JOBS="0"
export TRAVIS_WORKER_MAX_LOG_LENGTH="4500000"
export TRAVIS_WORKER_MAX_UPTIME="0s"
export TRAVIS_WORKER_PAYLOAD_FILTER_EXECUTABLE=""
export TRAVIS_WORKER_PAYLOAD_MAX_SIZE="1048576"
export TRAVIS_WORKER_POOL_SIZE="7"
export TRAVIS_WORKER_PPROF_ADDR="127.0.0.2"
export TRAVIS_WORKER_PPROF_NO_AUTH="false"
export TRAVIS_WORKER_PPROF_PORT="6060"
export TRAVIS_WORKER_PROGRESS_TYPE=""
export TRAVIS_WORKER_PROVIDER_NAME="testcloud"
export TRAVIS_WORKER_QUEUE_NAME="builds.gce"
export TRAVIS_WORKER_QUEUE_TYPE="amqp"
export TRAVIS_WORKER_RABBITMQ_SHARDING="true"
export TRAVIS_WORKER_REAPER_GRACE="10m0s"
export TRAVIS_WORKER_REAPER_INTERVAL="0s"
export TRAVIS_WORKER_REMOTE_CONTROLLER_ADDR="127.0.0.1:8080"
export TRAVIS_WORKER_REMOTE_CONTROLLER_AUTH="********"
export TRAVIS_WORKER_REQUEUE_LIMIT="0"
export TRAVIS_WORKER_SCRIPT_UPLOAD_TIMEOUT="3m30s"
export TRAVIS_WORKER_SHUTDOWN_TIMEOUT="45m0s"
export TRAVIS_WORKER_STARTUP_TIMEOUT="4m0s"
export TRAVIS_WORKER_START_HOOK="/usr/local/bin/register  --up"
export TRAVIS_WORKER_STOP_HOOK=""
export TRAVIS_WORKER_STRICT_CONFIG="false"
export TRAVIS_WORKER_WARM_POOL_MAX_AGE="30m0s"
export TRAVIS_WORKER_WARM_POOL_MODE="adaptive"
export TRAVIS_WORKER_WARM_POOL_SIZE="0"
export TRAVIS_WORKER_WARM_POOL_WINDOW="10m0s"

# provider settings (testcloud)
export TRAVIS_WORKER_TESTCLOUD_API_TOKEN="********"
export TRAVIS_WORKER_TESTCLOUD_BOOT_TIMEOUT="2m0s"
export TRAVIS_WORKER_TESTCLOUD_MAX_INSTANCES="10"
export TRAVIS_WORKER_TESTCLOUD_MODE="fast"
export TRAVIS_WORKER_TESTCLOUD_PREEMPTIBLE="false"
export TRAVIS_WORKER_TESTCLOUD_PROJECT_ID="ci-project"
export TRAVIS_WORKER_TESTCLOUD_SSH_KEY_PATH="/etc/mayfly/key"
export TRAVIS_WORKER_TESTCLOUD_ZONE="us-central1-b"

# set but not used by mayfly: TRAVIS_WORKER_LIBRATO_TOKEN TRAVIS_WORKER_SENTRY_DSN
`;

/** --echo-config of the defaults (host name aside), recorded before the core schema was nested. */
const DEFAULT_ECHO = `# mayfly effective configuration (secrets masked)
export TRAVIS_WORKER_AMQP_CONSUMER_PRIORITY="0"
export TRAVIS_WORKER_AMQP_DELIVERY_LIMIT="20"
export TRAVIS_WORKER_AMQP_HEARTBEAT="10s"
export TRAVIS_WORKER_AMQP_INSECURE="false"
export TRAVIS_WORKER_AMQP_QUEUE_TYPE="classic"
export TRAVIS_WORKER_AMQP_RECONNECT_BACKOFF="1s"
export TRAVIS_WORKER_AMQP_RECONNECT_MAX_BACKOFF="30s"
export TRAVIS_WORKER_AMQP_TLS_CERT=""
export TRAVIS_WORKER_AMQP_URI="amqp://"
export TRAVIS_WORKER_ASG_LIFECYCLE_HEARTBEAT_INTERVAL="1m0s"
export TRAVIS_WORKER_ASG_LIFECYCLE_HOOK=""
export TRAVIS_WORKER_BASE_DIR="./var/file-queue"
export TRAVIS_WORKER_BREAKER_BACKOFF="30s"
export TRAVIS_WORKER_BREAKER_MAX_BACKOFF="10m0s"
export TRAVIS_WORKER_BREAKER_THRESHOLD="5"
export TRAVIS_WORKER_BUILD_API_INSECURE_SKIP_VERIFY="false"
export TRAVIS_WORKER_BUILD_API_TIMEOUT="2m0s"
export TRAVIS_WORKER_BUILD_API_URI=""
export TRAVIS_WORKER_BUILD_APT_CACHE=""
export TRAVIS_WORKER_BUILD_CACHE_FETCH_TIMEOUT="5m0s"
export TRAVIS_WORKER_BUILD_CACHE_PUSH_TIMEOUT="5m0s"
export TRAVIS_WORKER_BUILD_CACHE_S3_ACCESS_KEY_ID=""
export TRAVIS_WORKER_BUILD_CACHE_S3_BUCKET=""
export TRAVIS_WORKER_BUILD_CACHE_S3_REGION=""
export TRAVIS_WORKER_BUILD_CACHE_S3_SCHEME=""
export TRAVIS_WORKER_BUILD_CACHE_S3_SECRET_ACCESS_KEY=""
export TRAVIS_WORKER_BUILD_CACHE_TYPE=""
export TRAVIS_WORKER_BUILD_FIX_ETC_HOSTS="false"
export TRAVIS_WORKER_BUILD_FIX_RESOLV_CONF="false"
export TRAVIS_WORKER_BUILD_NPM_CACHE=""
export TRAVIS_WORKER_BUILD_PARANOID="false"
export TRAVIS_WORKER_DEBUG="false"
export TRAVIS_WORKER_DEFAULT_ARCH="amd64"
export TRAVIS_WORKER_DEFAULT_DIST="xenial"
export TRAVIS_WORKER_DEFAULT_GROUP="stable"
export TRAVIS_WORKER_DEFAULT_LANGUAGE="default"
export TRAVIS_WORKER_DEFAULT_OS="linux"
export TRAVIS_WORKER_FILE_ECHO_LOGS="true"
export TRAVIS_WORKER_FILE_POLLING_INTERVAL="5s"
export TRAVIS_WORKER_HARD_TIMEOUT="50m0s"
export TRAVIS_WORKER_HEARTBEAT_URL=""
export TRAVIS_WORKER_HEARTBEAT_URL_AUTH_TOKEN=""
export TRAVIS_WORKER_HOSTNAME="worker-1"
export TRAVIS_WORKER_HOST_CLOUD="none"
export TRAVIS_WORKER_HOST_GCE_API_ENDPOINT=""
export TRAVIS_WORKER_HOST_NOTICE_MARGIN="20s"
export TRAVIS_WORKER_HOST_NOTICE_POLL_INTERVAL="5s"
export TRAVIS_WORKER_HOST_TERMINATE="false"
export TRAVIS_WORKER_IDLE_SHUTDOWN_AFTER="0s"
export TRAVIS_WORKER_INFRA=""
export TRAVIS_WORKER_INITIAL_SLEEP="1s"
export TRAVIS_WORKER_LOGS_AMQP_TLS_CERT=""
export TRAVIS_WORKER_LOGS_AMQP_URI=""
export TRAVIS_WORKER_LOG_DELIVERY_TIMEOUT="2m0s"
export TRAVIS_WORKER_LOG_TIMEOUT="10m0s"
export TRAVIS_WORKER_MAX_JOBS="0"
export TRAVIS_WORKER_MAX_LOG_LENGTH="4500000"
export TRAVIS_WORKER_MAX_UPTIME="0s"
export TRAVIS_WORKER_PAYLOAD_FILTER_EXECUTABLE=""
export TRAVIS_WORKER_PAYLOAD_MAX_SIZE="1048576"
export TRAVIS_WORKER_POOL_SIZE="1"
export TRAVIS_WORKER_PPROF_ADDR="127.0.0.1"
export TRAVIS_WORKER_PPROF_NO_AUTH="false"
export TRAVIS_WORKER_PPROF_PORT=""
export TRAVIS_WORKER_PROGRESS_TYPE=""
export TRAVIS_WORKER_PROVIDER_NAME="local"
export TRAVIS_WORKER_QUEUE_NAME="builds"
export TRAVIS_WORKER_QUEUE_TYPE="file"
export TRAVIS_WORKER_RABBITMQ_SHARDING="false"
export TRAVIS_WORKER_REAPER_GRACE="10m0s"
export TRAVIS_WORKER_REAPER_INTERVAL="5m0s"
export TRAVIS_WORKER_REMOTE_CONTROLLER_ADDR=""
export TRAVIS_WORKER_REMOTE_CONTROLLER_AUTH=""
export TRAVIS_WORKER_REQUEUE_LIMIT="10"
export TRAVIS_WORKER_SCRIPT_UPLOAD_TIMEOUT="3m30s"
export TRAVIS_WORKER_SHUTDOWN_TIMEOUT="45m0s"
export TRAVIS_WORKER_STARTUP_TIMEOUT="4m0s"
export TRAVIS_WORKER_START_HOOK=""
export TRAVIS_WORKER_STOP_HOOK=""
export TRAVIS_WORKER_STRICT_CONFIG="false"
export TRAVIS_WORKER_WARM_POOL_MAX_AGE="30m0s"
export TRAVIS_WORKER_WARM_POOL_MODE="adaptive"
export TRAVIS_WORKER_WARM_POOL_SIZE="0"
export TRAVIS_WORKER_WARM_POOL_WINDOW="10m0s"

# provider settings (local)
export TRAVIS_WORKER_LOCAL_SCRIPTS_DIR="./var/local"
`;

describe('echoConfig', () => {
  const secrets = {
    TRAVIS_WORKER_PROVIDER_NAME: 'testcloud',
    TRAVIS_WORKER_TESTCLOUD_PROJECT_ID: 'ci-project',
    TRAVIS_WORKER_TESTCLOUD_API_TOKEN: 'backend-token-s3cr3t',
    TRAVIS_WORKER_AMQP_URI: 'amqp://guest:amqp-pw-s3cr3t@rabbit.example.com/vhost',
    TRAVIS_WORKER_LOGS_AMQP_URI: 'amqps://logger:logs-pw-s3cr3t@logs.example.com',
    TRAVIS_WORKER_BUILD_API_URI: 'https://build-token-s3cr3t@build.example.com/script',
    TRAVIS_WORKER_BUILD_CACHE_S3_SECRET_ACCESS_KEY: 's3-key-s3cr3t',
    TRAVIS_WORKER_AMQP_TLS_CERT: '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n',
    TRAVIS_WORKER_HARD_TIMEOUT: '1h2m3.5s',
  };

  it('masks every secret and never prints one', () => {
    const text = echoConfig(loadConfig(BACKENDS, secrets), BACKENDS);
    expect(text).not.toMatch(/s3cr3t/);
    expect(text).not.toContain('MIIB');
    expect(text).toContain('export TRAVIS_WORKER_AMQP_URI="amqp://****:****@rabbit.example.com/vhost"\n');
    expect(text).toContain('export TRAVIS_WORKER_LOGS_AMQP_URI="amqps://****:****@logs.example.com"\n');
    const cluster = echoConfig(loadConfig(BACKENDS, { ...secrets, TRAVIS_WORKER_AMQP_URI: `${secrets.TRAVIS_WORKER_AMQP_URI},amqp://guest:amqp-pw-s3cr3t@rabbit-2` }), BACKENDS);
    expect(cluster).not.toMatch(/s3cr3t/);
    expect(cluster).toContain('export TRAVIS_WORKER_AMQP_URI="amqp://****:****@rabbit.example.com/vhost,amqp://****:****@rabbit-2"\n');
    expect(text).toContain('export TRAVIS_WORKER_BUILD_API_URI="https://****@build.example.com/script"\n');
    expect(text).toContain('export TRAVIS_WORKER_BUILD_CACHE_S3_SECRET_ACCESS_KEY="********"\n');
    expect(text).toContain('export TRAVIS_WORKER_TESTCLOUD_API_TOKEN="********"\n');
    const pemLength = secrets.TRAVIS_WORKER_AMQP_TLS_CERT.length;
    expect(text).toContain(`# TRAVIS_WORKER_AMQP_TLS_CERT: ${pemLength} characters of PEM (not shown)\n`);
  });

  it('leaves an empty secret empty', () => {
    const text = echoConfig(loadConfig(BACKENDS, { ...secrets, TRAVIS_WORKER_TESTCLOUD_API_TOKEN: '' }), BACKENDS);
    expect(text).toContain('export TRAVIS_WORKER_TESTCLOUD_API_TOKEN=""\n');
    expect(text).toContain('export TRAVIS_WORKER_BUILD_CACHE_S3_ACCESS_KEY_ID=""\n');
  });

  it('prints durations the Go way, core settings sorted, then the provider settings', () => {
    const text = echoConfig(loadConfig(BACKENDS, secrets), BACKENDS);
    expect(text).toContain('export TRAVIS_WORKER_HARD_TIMEOUT="1h2m3.5s"\n');
    expect(text).toContain('export TRAVIS_WORKER_SCRIPT_UPLOAD_TIMEOUT="3m30s"\n');
    expect(text).toContain('export TRAVIS_WORKER_TESTCLOUD_BOOT_TIMEOUT="2m0s"\n');
    const [core, provider] = text.split('# provider settings (testcloud)\n') as [string, string];
    const coreNames = Object.keys(parseExports(core));
    expect(coreNames).toEqual([...coreNames].sort());
    expect(coreNames.every((name) => !name.startsWith('TRAVIS_WORKER_TESTCLOUD_'))).toBe(true);
    expect(Object.keys(parseExports(provider))).toEqual([
      'TRAVIS_WORKER_TESTCLOUD_API_TOKEN',
      'TRAVIS_WORKER_TESTCLOUD_BOOT_TIMEOUT',
      'TRAVIS_WORKER_TESTCLOUD_MAX_INSTANCES',
      'TRAVIS_WORKER_TESTCLOUD_MODE',
      'TRAVIS_WORKER_TESTCLOUD_PREEMPTIBLE',
      'TRAVIS_WORKER_TESTCLOUD_PROJECT_ID',
      'TRAVIS_WORKER_TESTCLOUD_SSH_KEY_PATH',
      'TRAVIS_WORKER_TESTCLOUD_ZONE',
    ]);
  });

  it('mentions ignored settings by name only', () => {
    const text = echoConfig(loadConfig(BACKENDS, { TRAVIS_WORKER_LIBRATO_TOKEN: 'librato-s3cr3t' }), BACKENDS);
    expect(text).toContain('TRAVIS_WORKER_LIBRATO_TOKEN');
    expect(text).not.toContain('librato-s3cr3t');
  });

  it('prints a full, non-trivial configuration exactly as operators have seen it', () => {
    const files = mkdtempSync(join(tmpdir(), 'mayfly-echo-'));
    try {
      writeFileSync(join(files, 'logs.pem'), '-----BEGIN CERTIFICATE-----\nLOGS\n-----END CERTIFICATE-----\n');
      writeFileSync(join(files, 'token'), ' heartbeat-s3cr3t\n');
      const config = loadConfig(BACKENDS, {
        ...secrets,
        TRAVIS_WORKER_QUEUE_TYPE: 'amqp',
        TRAVIS_WORKER_QUEUE_NAME: 'builds.gce',
        TRAVIS_WORKER_POOL_SIZE: '7',
        TRAVIS_WORKER_HOSTNAME: 'worker-7',
        TRAVIS_WORKER_INFRA: 'gce',
        TRAVIS_WORKER_DEBUG: 'yes',
        TRAVIS_WORKER_LOGS_AMQP_TLS_CERT_PATH: join(files, 'logs.pem'),
        TRAVIS_WORKER_RABBITMQ_SHARDING: 'true',
        TRAVIS_WORKER_FILE_ECHO_LOGS: 'false',
        TRAVIS_WORKER_BUILD_APT_CACHE: 'http://apt-user:apt-s3cr3t@apt.example.com',
        TRAVIS_WORKER_BUILD_CACHE_TYPE: 's3',
        TRAVIS_WORKER_BUILD_CACHE_FETCH_TIMEOUT: '1m30.9s',
        TRAVIS_WORKER_BUILD_CACHE_S3_BUCKET: 'cache',
        TRAVIS_WORKER_BUILD_CACHE_S3_ACCESS_KEY_ID: 'AKIA',
        TRAVIS_WORKER_REMOTE_CONTROLLER_ADDR: ':8080',
        TRAVIS_WORKER_REMOTE_CONTROLLER_AUTH: 'ops:control-s3cr3t',
        TRAVIS_WORKER_PPROF_PORT: ' 6060 ',
        TRAVIS_WORKER_PPROF_ADDR: ' 127.0.0.2 ',
        TRAVIS_WORKER_START_HOOK: ' /usr/local/bin/register  --up ',
        TRAVIS_WORKER_HEARTBEAT_URL: 'https://hb:hb-s3cr3t@supervisor.example.com/hb',
        TRAVIS_WORKER_HEARTBEAT_URL_AUTH_TOKEN: `file://${join(files, 'token')}`,
        TRAVIS_WORKER_REQUEUE_LIMIT: '0',
        TRAVIS_WORKER_REAPER_INTERVAL: '0',
        TRAVIS_WORKER_TESTCLOUD_MODE: 'fast',
        TRAVIS_WORKER_SENTRY_DSN: 'https://key@sentry.example.com/1',
        TRAVIS_WORKER_LIBRATO_TOKEN: 'librato-s3cr3t',
      });
      expect(echoConfig(config, BACKENDS)).toBe(FULL_ECHO);
    } finally {
      rmSync(files, { recursive: true, force: true });
    }
  });

  it('prints the defaults exactly as operators have seen them', () => {
    expect(echoConfig(loadConfig(BACKENDS, { TRAVIS_WORKER_HOSTNAME: 'worker-1' }), BACKENDS)).toBe(DEFAULT_ECHO);
  });

  it('prints what loads back to the same configuration', () => {
    const env = {
      TRAVIS_WORKER_PROVIDER_NAME: 'testcloud',
      TRAVIS_WORKER_TESTCLOUD_PROJECT_ID: 'a "quoted" $project `name` \\ here',
      TRAVIS_WORKER_TESTCLOUD_API_TOKEN: '',
      TRAVIS_WORKER_QUEUE_TYPE: 'amqp',
      TRAVIS_WORKER_AMQP_URI: 'amqp://rabbit.example.com',
      TRAVIS_WORKER_POOL_SIZE: '4',
      TRAVIS_WORKER_DEBUG: 'yes',
      TRAVIS_WORKER_INITIAL_SLEEP: '250ms',
      TRAVIS_WORKER_BUILD_CACHE_TYPE: 's3',
    };
    const config = loadConfig(BACKENDS, env);
    expect(loadConfig(BACKENDS, parseExports(echoConfig(config, BACKENDS)))).toEqual(config);
  });
});

describe('listBackendProviders', () => {
  it('lists each backend with its variables, defaults and docs, secrets masked', () => {
    const text = listBackendProviders(BACKENDS);
    expect(text).toContain('local: Runs each job on this machine\n');
    expect(text).toContain('  TRAVIS_WORKER_LOCAL_SCRIPTS_DIR (default "./var/local")\n      Where build scripts are written\n');
    expect(text).toContain('testcloud: A cloud that exists only in these tests\n');
    expect(text).toContain('  TRAVIS_WORKER_TESTCLOUD_PROJECT_ID (required)\n      Project to start machines in\n');
    expect(text).toContain('  TRAVIS_WORKER_TESTCLOUD_ZONE (default "us-central1-b")\n');
    expect(text).toContain('  TRAVIS_WORKER_TESTCLOUD_BOOT_TIMEOUT (default "2m0s")\n');
    expect(text).toContain('  TRAVIS_WORKER_TESTCLOUD_MAX_INSTANCES (default "10")\n');
    expect(text).toContain('  TRAVIS_WORKER_TESTCLOUD_SSH_KEY_PATH (default "/etc/mayfly/key")\n');
    expect(text).toContain('  TRAVIS_WORKER_TESTCLOUD_API_TOKEN (default "********")\n');
    expect(text).not.toContain('default-token-value');
  });
});
