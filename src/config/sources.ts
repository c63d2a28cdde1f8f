/**
 * Where a setting's text comes from, in travis-ci/worker's order: its
 * command-line flag (`--pool-size`), else `TRAVIS_WORKER_POOL_SIZE`, else the
 * plain `POOL_SIZE`. A provider's settings have the same two names
 * (`TRAVIS_WORKER_GCE_PROJECT_ID`, `GCE_PROJECT_ID`) and no flag, and their
 * values are URL-unescaped, as travis' ProviderConfig does.
 */
import { unescape as queryUnescapeValid } from 'node:querystring';
import { ENV_PREFIX } from './env.js';

/** What loading reads: the environment, and the command-line flags keyed by the variable they stand for. */
export interface SettingInput {
  env: NodeJS.ProcessEnv;
  /** `--pool-size 3` is `{ TRAVIS_WORKER_POOL_SIZE: '3' }`. */
  flags: Readonly<Record<string, string>>;
}

/** A setting's text and the name it was given under (a variable or `--flag`), for messages. */
export interface SettingText {
  source: string;
  text: string;
}

/** `TRAVIS_WORKER_POOL_SIZE` -> `POOL_SIZE`: the other name travis reads every setting under. */
export function plainName(variable: string): string {
  return variable.startsWith(ENV_PREFIX) ? variable.slice(ENV_PREFIX.length) : variable;
}

/** `TRAVIS_WORKER_POOL_SIZE` -> `pool-size`, the command-line flag travis gives the setting. */
export function flagName(variable: string): string {
  return plainName(variable).toLowerCase().replace(/_/g, '-');
}

/**
 * The text of the setting read from `variable`: the flag, else the
 * prefixed variable, else the plain one. A variable that is set but empty
 * still counts (travis' flag library reads it so), so an empty
 * `TRAVIS_WORKER_X` hides a plain `X`.
 */
export function settingText(input: SettingInput, variable: string): SettingText | undefined {
  const flag = input.flags[variable];
  if (flag !== undefined) return { source: `--${flagName(variable)}`, text: flag };
  for (const name of [variable, plainName(variable)]) {
    const text = input.env[name];
    if (text !== undefined) return { source: name, text };
  }
  return undefined;
}

/** A `%` not starting a two-digit hex escape: Go's url.QueryUnescape refuses the whole text then. */
const BAD_ESCAPE = /%(?![0-9A-Fa-f]{2})/;

/**
 * A provider setting's value as travis reads it: URL-unescaped (`%2B` is
 * `+`, `+` is a space), except for the `*ACCOUNT_JSON` settings, and
 * unchanged when it is not valid escaping.
 */
export function providerValue(variable: string, text: string): string {
  if (variable.endsWith('ACCOUNT_JSON') || BAD_ESCAPE.test(text)) return text;
  return queryUnescapeValid(text.replace(/\+/g, ' '));
}
