/**
 * Which `TRAVIS_WORKER_*` variables mayfly knows, and what it says about
 * the ones set that it does not use: a travis setting with no effect here
 * (one warning each, saying why), the settings of a travis provider mayfly
 * has no backend for (one warning per provider), and an unknown variable
 * (a warning naming the closest known one, or with STRICT_CONFIG a
 * problem that stops startup). travis itself ignores all of these silently.
 */
import type { SettingFamily } from '../backend/contract.js';
import { ConfigError } from '../errors.js';
import { ENV_PREFIX, backendEnvName, closestName, familyEnvPrefix, schemaLeaves, upperSnake } from './env.js';
import { FOREIGN_PROVIDERS, IGNORED_PROVIDER_SETTINGS, IGNORED_SETTINGS, type IgnoredSetting } from './ignored.js';
import type { Problems } from './read.js';
import { settingText, type SettingInput } from './sources.js';
import type { AnyBackendDefinition, ConfigWarning } from './types.js';

/** What a variable is to mayfly. */
export type Owner =
  | { kind: 'core' }
  | { kind: 'backend'; backend: string; family?: { key: string; name: string } }
  | { kind: 'ignored'; backend?: string; setting: IgnoredSetting }
  | { kind: 'foreign'; provider: string };

/** A family variable's backend, family key and name (lower case), if `variable` is one. */
function familyMember(
  variable: string,
  backends: readonly AnyBackendDefinition[],
): { backend: string; key: string; name: string } | undefined {
  for (const backend of backends) {
    for (const [family, { prefix }] of Object.entries(backend.settingFamilies ?? {}) as [string, SettingFamily][]) {
      const start = familyEnvPrefix(backend.name, prefix);
      if (variable.startsWith(start) && variable.length > start.length) {
        return { backend: backend.name, key: family, name: variable.slice(start.length).toLowerCase() };
      }
    }
  }
  return undefined;
}

/** The variables mayfly knows: core ones (`coreVariables`), every backend's, and the travis settings it accepts unused. */
export class KnownVariables {
  private readonly owners = new Map<string, Owner>();

  constructor(
    private readonly backends: readonly AnyBackendDefinition[],
    coreVariables: Iterable<string>,
  ) {
    for (const variable of coreVariables) this.owners.set(variable, { kind: 'core' });
    for (const setting of IGNORED_SETTINGS) this.owners.set(setting.name, { kind: 'ignored', setting });
    for (const backend of backends) {
      for (const leaf of schemaLeaves(backend.settings)) {
        const variable = backendEnvName(backend.name, leaf.parts);
        const previous = this.owners.get(variable);
        if (previous !== undefined && !(previous.kind === 'backend' && previous.backend === backend.name)) {
          // A programming error in a backend, but it must not silently shadow a core setting.
          throw new ConfigError(`backend ${backend.name}: setting ${leaf.path} would be read from ${variable}, which is already taken`);
        }
        this.owners.set(variable, { kind: 'backend', backend: backend.name });
      }
      for (const setting of IGNORED_PROVIDER_SETTINGS[backend.name] ?? []) {
        // A declared setting wins over a stale entry of the list (a test reports those).
        const variable = backendEnvName(backend.name, [setting.name]);
        if (!this.owners.has(variable)) this.owners.set(variable, { kind: 'ignored', backend: backend.name, setting });
      }
    }
  }

  /** Who reads `variable` (a `TRAVIS_WORKER_*` name), if anyone. */
  owner(variable: string): Owner | undefined {
    const owner = this.owners.get(variable);
    if (owner !== undefined) return owner;
    const member = familyMember(variable, this.backends);
    if (member !== undefined) return { kind: 'backend', backend: member.backend, family: { key: member.key, name: member.name } };
    const provider = FOREIGN_PROVIDERS.find((name) => variable.startsWith(`${ENV_PREFIX}${upperSnake(name)}_`));
    return provider === undefined ? undefined : { kind: 'foreign', provider };
  }

  /**
   * The warnings about what is set in `input` but has no effect, for a
   * worker of `provider`; with `strict`, unknown variables are problems
   * instead.
   */
  warnings(input: SettingInput, provider: string, strict: boolean, problems: Problems): ConfigWarning[] {
    const warnings: ConfigWarning[] = [];
    for (const [variable, owner] of this.owners) {
      if (owner.kind !== 'ignored' || (owner.backend !== undefined && owner.backend !== provider)) continue;
      const set = settingText(input, variable);
      if (set !== undefined) warnings.push({ variables: [set.source], message: `${set.source} has no effect in mayfly: ${owner.setting.why}` });
    }
    const foreign = new Map<string, string[]>();
    for (const [variable, value] of Object.entries(input.env)) {
      if (!variable.startsWith(ENV_PREFIX) || value === undefined) continue;
      const owner = this.owner(variable);
      if (owner?.kind === 'foreign') foreign.set(owner.provider, [...(foreign.get(owner.provider) ?? []), variable]);
      if (owner !== undefined) continue;
      const suggestion = closestName(variable, this.owners.keys());
      const hint = suggestion === undefined ? '' : ` (did you mean ${suggestion}?)`;
      if (strict) problems.add(variable, `unknown setting${hint}`);
      else warnings.push({ variables: [variable], message: `${variable} is not a setting mayfly knows, so it has no effect${hint}` });
    }
    for (const [provider, variables] of foreign) {
      variables.sort();
      warnings.push({ variables, message: `mayfly has no ${provider} backend, so these settings of travis' ${provider} provider have no effect: ${variables.join(', ')}` });
    }
    return warnings;
  }
}
