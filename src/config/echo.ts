/** `--echo-config` and `--list-backend-providers`: settings written back as an operator would write them. */
import type convict from 'convict';
import type { SettingFamily } from '../backend/contract.js';
import { MASK } from '../redact.js';
import { formatListenAddress } from '../util/net.js';
import { backendEnvName, exportLine, familyEnvPrefix, formatSettingValue, isRequired, schemaLeaves } from './env.js';
import { byCodeUnits } from './read.js';
import { CORE_SETTINGS, ENV, type CoreKey, type CoreSettings } from './schema.js';
import type { AnyBackendDefinition, WorkerConfig } from './types.js';


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
    progressType: config.progressType,
    payloadFilterExecutable: config.payloadFilterExecutable ?? '',
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
