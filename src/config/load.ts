/**
 * The worker's configuration: the only module that reads `process.env`.
 *
 * Each core setting is read as travis-ci/worker reads it: its command-line
 * flag, else `TRAVIS_WORKER_<NAME>`, else `<NAME>` (sources.ts). Settings of
 * the selected backend are `TRAVIS_WORKER_<BACKEND>_<KEY>` or
 * `<BACKEND>_<KEY>`, URL-unescaped, declared by the backend's own schema and
 * checked by its `validate` hook. A bad value or a missing required setting
 * stops startup with a `ConfigError` naming every offending variable; what
 * is set but has no effect (an unknown variable, a travis setting mayfly
 * does not use) is a warning (known.ts), an unknown variable a problem too
 * with STRICT_CONFIG.
 */
import { isLoopback } from '../util/net.js';
import { COMMAND_VARIABLES } from './cli.js';
import { ENV_PREFIX, backendEnvName } from './env.js';
import { KnownVariables } from './known.js';
import { Problems, readSettings } from './read.js';
import { CORE_SETTINGS, CORE_VARIABLES, type CoreConfig } from './schema.js';
import { providerValue, settingText, type SettingInput } from './sources.js';
import type { AnyBackendDefinition, WorkerConfig } from './types.js';
import { withoutUnset } from './unset.js';

/**
 * The selected backend's family settings from `input`, e.g.
 * `{ images: { ruby: '...' } }`: `TRAVIS_WORKER_<BACKEND>_<PREFIX>_<NAME>` or
 * `<BACKEND>_<PREFIX>_<NAME>`, the prefixed one winning.
 */
function readFamilies(backend: AnyBackendDefinition, known: KnownVariables, input: SettingInput): Record<string, Record<string, string>> {
  const families: Record<string, Record<string, string>> = Object.fromEntries(
    Object.keys(backend.settingFamilies ?? {}).map((family) => [family, {}]),
  );
  // Plain names first, so that the prefixed ones overwrite them.
  const prefixedLast = Object.entries(input.env).sort(([a], [b]) => Number(a.startsWith(ENV_PREFIX)) - Number(b.startsWith(ENV_PREFIX)));
  for (const [name, value] of prefixedLast) {
    const variable = name.startsWith(ENV_PREFIX) ? name : `${ENV_PREFIX}${name}`;
    const owner = known.owner(variable);
    if (value === undefined || owner?.kind !== 'backend' || owner.backend !== backend.name || owner.family === undefined) continue;
    (families[owner.family.key] as Record<string, string>)[owner.family.name] = providerValue(variable, value);
  }
  return families;
}

/** Every variable mayfly knows: the core settings and commands, and what `backends` and ignored.ts add. */
export function knownVariables(backends: readonly AnyBackendDefinition[]): KnownVariables {
  return new KnownVariables(backends, [...CORE_VARIABLES, ...COMMAND_VARIABLES].map(({ env }) => env));
}

/**
 * Read the configuration from `env` (the process environment by default)
 * and the command-line `flags` (keyed by the variable each stands for, see
 * cli.ts): core settings, then the selected backend's. Throws a
 * `ConfigError` naming each bad value, missing required setting, an unknown
 * provider name, and with STRICT_CONFIG each unknown variable.
 */
export function loadConfig(
  backends: readonly AnyBackendDefinition[],
  env: NodeJS.ProcessEnv = process.env,
  flags: Readonly<Record<string, string>> = {},
): WorkerConfig {
  const input: SettingInput = { env, flags };
  const problems = new Problems();
  const known = knownVariables(backends);

  const settings = readSettings(CORE_SETTINGS, (leaf) => leaf.node.env as string, input, problems);
  const core = settings && (withoutUnset(CORE_SETTINGS, settings) as CoreConfig);

  // The backend is looked up even when other core settings are bad, so one run reports everything.
  const givenProvider = settingText(input, CORE_SETTINGS.providerName.env);
  const providerName = givenProvider?.text ?? CORE_SETTINGS.providerName.default ?? '';
  const backend = backends.find((candidate) => candidate.name.toLowerCase() === providerName.trim().toLowerCase());
  let backendSettings: Record<string, unknown> | undefined;
  if (backend === undefined) {
    const names = backends.map((candidate) => candidate.name).sort();
    problems.add(givenProvider?.source ?? CORE_SETTINGS.providerName.env, `unknown provider ${JSON.stringify(providerName)} (known: ${names.join(', ') || 'none'})`);
  } else {
    const declared = readSettings(backend.settings, (leaf) => backendEnvName(backend.name, leaf.parts), input, problems, providerValue);
    if (declared !== undefined) backendSettings = { ...declared, ...readFamilies(backend, known, input) };
    if (backendSettings !== undefined) {
      for (const { setting, problem } of backend.validate?.(backendSettings) ?? []) {
        const variable = backendEnvName(backend.name, setting.split('.'));
        problems.add(settingText(input, variable)?.source ?? variable, problem);
      }
    }
  }
  if (core) checkTogether(core, problems);
  // Read on its own, so that unknown variables are reported even when other core settings are bad.
  const strict = readSettings({ strictConfig: CORE_SETTINGS.strictConfig }, () => CORE_SETTINGS.strictConfig.env, input, new Problems());
  const warnings = known.warnings(input, backend?.name ?? '', strict?.strictConfig === true, problems);
  const otlpEndpoint = env.OTEL_EXPORTER_OTLP_ENDPOINT?.trim() || undefined;

  if (problems.count > 0 || core === undefined || backend === undefined || backendSettings === undefined) {
    throw problems.toError();
  }
  return {
    ...core,
    providerName: backend.name,
    backendSettings,
    warnings,
    telemetry: otlpEndpoint === undefined ? {} : { otlpEndpoint },
  };
}

/** Problems no single setting shows: settings that must agree with each other. */
function checkTogether(core: CoreConfig, problems: Problems): void {
  const { debug, breaker, amqp, warmPool } = core;
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
  const { host } = core;
  if (host.asgLifecycleHook !== undefined && host.cloud !== 'aws') {
    problems.add(CORE_SETTINGS.host.asgLifecycleHook.env, 'needs TRAVIS_WORKER_HOST_CLOUD=aws: the host learns of its scale-in from EC2 instance metadata');
  }
  if (core.lifetime.hostTerminate && host.cloud === 'none') {
    problems.add(CORE_SETTINGS.lifetime.hostTerminate.env, 'needs TRAVIS_WORKER_HOST_CLOUD=aws or gce: the host finds its group through its cloud');
  }
  // Zero would read the metadata service (or retry a failed read) in a tight loop.
  if (host.noticePollMs <= 0) problems.add(CORE_SETTINGS.host.noticePollMs.env, 'must be longer than 0s');
  if (host.asgHeartbeatMs <= 0) problems.add(CORE_SETTINGS.host.asgHeartbeatMs.env, 'must be longer than 0s');
  if (warmPool.size > 0) {
    // Zero would replace every warm instance the moment it is ready; a zero window would never keep one.
    if (warmPool.maxAgeMs <= 0) problems.add(CORE_SETTINGS.warmPool.maxAgeMs.env, 'must be longer than 0s while the warm pool is on (WARM_POOL_SIZE > 0)');
    if (warmPool.mode === 'adaptive' && warmPool.windowMs <= 0) {
      problems.add(CORE_SETTINGS.warmPool.windowMs.env, 'must be longer than 0s while the adaptive warm pool is on (WARM_POOL_SIZE > 0)');
    }
  }
}
