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
import type { SettingFamily } from '../backend/contract.js';
import { ConfigError } from '../errors.js';
import { isLoopback } from '../util/net.js';
import { ENV_PREFIX, backendEnvName, closestName, familyEnvPrefix, schemaLeaves } from './env.js';
import { COMMAND_LINE_ONLY, IGNORED_SETTINGS } from './ignored.js';
import { Problems, readSettings } from './read.js';
import { CORE_SETTINGS, CORE_VARIABLES, type CoreConfig } from './schema.js';
import type { AnyBackendDefinition, WorkerConfig } from './types.js';
import { withoutUnset } from './unset.js';

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
  for (const { env } of CORE_VARIABLES) known.set(env, { kind: 'core' });
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

  const settings = readSettings(CORE_SETTINGS, (leaf) => leaf.node.env as string, env, problems);
  const core = settings && (withoutUnset(CORE_SETTINGS, settings) as CoreConfig);

  // The backend is looked up even when other core settings are bad, so one run reports everything.
  const providerName = env[CORE_SETTINGS.providerName.env] ?? CORE_SETTINGS.providerName.default ?? '';
  const backend = backends.find((candidate) => candidate.name.toLowerCase() === providerName.trim().toLowerCase());
  let backendSettings: Record<string, unknown> | undefined;
  if (backend === undefined) {
    const names = backends.map((candidate) => candidate.name).sort();
    problems.add(CORE_SETTINGS.providerName.env, `unknown provider ${JSON.stringify(providerName)} (known: ${names.join(', ') || 'none'})`);
  } else {
    const declared = readSettings(backend.settings, (leaf) => backendEnvName(backend.name, leaf.parts), env, problems);
    if (declared !== undefined) backendSettings = { ...declared, ...readFamilies(backend, backends, known, env) };
    if (backendSettings !== undefined) {
      for (const { setting, problem } of backend.validate?.(backendSettings) ?? []) {
        problems.add(backendEnvName(backend.name, setting.split('.')), problem);
      }
    }
  }
  if (core) checkTogether(core, problems);
  const otlpEndpoint = env.OTEL_EXPORTER_OTLP_ENDPOINT?.trim() || undefined;

  if (problems.count > 0 || core === undefined || backend === undefined || backendSettings === undefined) {
    throw problems.toError();
  }
  return {
    ...core,
    providerName: backend.name,
    backendSettings,
    ignoredSettings: ignoredSettings.sort(),
    telemetry: otlpEndpoint === undefined ? {} : { otlpEndpoint },
  };
}

/** Problems no single setting shows: settings that must agree with each other. */
function checkTogether(core: CoreConfig, problems: Problems): void {
  const { debug, breaker, amqp } = core;
  if (debug && core.remoteAuth === undefined) {
    if (!isLoopback(debug.host)) {
      problems.add(CORE_SETTINGS.debug.host.env, 'is not a loopback address, so the debug port needs TRAVIS_WORKER_REMOTE_CONTROLLER_AUTH to protect it');
    } else if (!debug.noAuth) {
      problems.add(
        CORE_SETTINGS.debug.port.env,
        'is set, so the debug port needs TRAVIS_WORKER_REMOTE_CONTROLLER_AUTH: every process on this host can reach loopback, jobs of the local and ssh backends included (TRAVIS_WORKER_PPROF_NO_AUTH=true serves it there without credentials anyway)',
      );
    }
  }
  if (breaker.threshold > 0 && breaker.backoffMs <= 0) {
    problems.add(CORE_SETTINGS.breaker.backoffMs.env, 'must be longer than 0s while the circuit breaker is on (BREAKER_THRESHOLD > 0)');
  }
  if (breaker.maxBackoffMs < breaker.backoffMs) {
    problems.add(CORE_SETTINGS.breaker.maxBackoffMs.env, 'must be at least TRAVIS_WORKER_BREAKER_BACKOFF');
  }
  // Zero would retry a refused connection in a tight loop.
  if (amqp.reconnect.initialMs <= 0) problems.add(CORE_SETTINGS.amqp.reconnect.initialMs.env, 'must be longer than 0s');
  if (amqp.reconnect.maxMs < amqp.reconnect.initialMs) {
    problems.add(CORE_SETTINGS.amqp.reconnect.maxMs.env, 'must be at least TRAVIS_WORKER_AMQP_RECONNECT_BACKOFF');
  }
  if (amqp.logDeliveryTimeoutMs <= 0) problems.add(CORE_SETTINGS.amqp.logDeliveryTimeoutMs.env, 'must be longer than 0s');
}
