/** The loaded core settings (flat, one per variable) shaped into the `WorkerConfig` the engine reads. */
import { hostname as osHostname } from 'node:os';
import { parseListenAddress } from '../util/net.js';
import type { CoreSettings } from './schema.js';
import type { WorkerConfig } from './types.js';

/** `''` means "not set" for optional text settings. */
function optional(value: string): string | undefined {
  return value === '' ? undefined : value;
}

export function toWorkerConfig(
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
    progressType: core.progressType as WorkerConfig['progressType'],
    ...(core.payloadFilterExecutable === '' ? {} : { payloadFilterExecutable: core.payloadFilterExecutable }),
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
