/**
 * The worker's configuration: the only module that reads `process.env`.
 *
 * Settings of the selected backend are `TRAVIS_WORKER_<BACKEND>_<KEY>`,
 * declared by the backend's own schema and checked by its `validate` hook.
 * Loading is strict: an unknown `TRAVIS_WORKER_*` variable (a typo), a bad
 * value or a missing required setting stops startup with a `ConfigError`
 * naming every offending variable. Settings travis reads but mayfly has no
 * use for are accepted and listed in `ignoredSettings` for a warning.
 */
import { readFileSync } from 'node:fs';
import type { SettingFamily } from '../backend/contract.js';
import { ConfigError, errorMessage } from '../errors.js';
import { isLoopback } from '../util/net.js';
import { toWorkerConfig } from './compile.js';
import { ENV_PREFIX, backendEnvName, closestName, familyEnvPrefix, schemaLeaves } from './env.js';
import { COMMAND_LINE_ONLY, IGNORED_SETTINGS } from './ignored.js';
import { Problems, readSettings } from './read.js';
import { CORE_SETTINGS, ENV, type CoreSettings } from './schema.js';
import type { AnyBackendDefinition, WorkerConfig } from './types.js';

const CORE_LEAVES = schemaLeaves(CORE_SETTINGS);

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

