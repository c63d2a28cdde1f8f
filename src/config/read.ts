/**
 * Reading one schema's settings from the environment, every problem
 * collected under the name of its variable so that one error names them all.
 */
import { readFileSync } from 'node:fs';
import convict from 'convict';
import { ConfigError, errorMessage } from '../errors.js';
import { isRequired, isUrlSetting, parseEnvText, schemaLeaves, type SettingLeaf } from './env.js';

/** Plain string order (Go's sort.Strings), not locale order, which ignores `_`. */
export function byCodeUnits(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Problems found while loading, keyed by variable so each is reported once. */
export class Problems {
  private readonly byVariable = new Map<string, string>();

  add(variable: string, problem: string): void {
    if (!this.byVariable.has(variable)) this.byVariable.set(variable, problem);
  }

  has(variable: string): boolean {
    return this.byVariable.has(variable);
  }

  get count(): number {
    return this.byVariable.size;
  }

  toError(): ConfigError {
    const lines = [...this.byVariable].sort(([a], [b]) => byCodeUnits(a, b)).map(([variable, problem]) => `${variable}: ${problem}`);
    return new ConfigError(
      lines.length === 1 ? `invalid configuration: ${lines[0]}` : `invalid configuration (${lines.length} problems):\n  ${lines.join('\n  ')}`,
    );
  }
}

/**
 * Read one schema's settings from `env`: each leaf from the variable
 * `envName(leaf)` names, parsed strictly, then validated by convict. Every
 * problem goes to `problems` under the variable's name; the result is
 * undefined when there was any.
 */
export function readSettings(
  schema: object,
  envName: (leaf: SettingLeaf) => string,
  env: NodeJS.ProcessEnv,
  problems: Problems,
): Record<string, unknown> | undefined {
  const before = problems.count;
  const leaves = schemaLeaves(schema);
  // Values are set below one by one, so each failure is tied to its variable; convict itself reads nothing.
  const settings = convict<Record<string, unknown>>(schema as convict.Schema<Record<string, unknown>>, { env: {}, args: [] });
  const variableOfPath = new Map<string, string>();
  for (const leaf of leaves) {
    const variable = envName(leaf);
    variableOfPath.set(leaf.path, variable);
    const raw = variableText(leaf, variable, env, problems);
    if (isRequired(leaf.node) && (raw === undefined || raw.trim() === '')) {
      problems.add(variable, 'is required but not set');
      continue;
    }
    if (raw === undefined) continue;
    let value: unknown;
    try {
      value = parseEnvText(leaf.node, raw);
    } catch (err) {
      problems.add(variable, describeBadValue(leaf.node, raw, errorMessage(err)));
      continue;
    }
    try {
      // A format's own coercion (durations, JSON) runs here; its message may quote the value.
      settings.set(leaf.path, value);
    } catch (err) {
      problems.add(variable, leaf.node.sensitive === true ? 'has a value its format rejects' : describeBadValue(leaf.node, raw, errorMessage(err)));
    }
  }
  try {
    settings.validate({ allowed: 'strict' });
  } catch (err) {
    // convict reports one `path: message[: value was ...]` line per setting; name the variable instead.
    for (const line of errorMessage(err).split('\n')) {
      const match = /^([^:\s]+): (.*?)(?:: value was .*)?$/.exec(line);
      const variable = match ? variableOfPath.get(match[1] as string) : undefined;
      if (match === null || variable === undefined) {
        problems.add('(settings)', line);
        continue;
      }
      const raw = env[variable];
      const leaf = leaves.find((candidate) => candidate.path === match[1]) as SettingLeaf;
      problems.add(variable, raw === undefined ? (match[2] as string) : describeBadValue(leaf.node, raw, match[2] as string));
    }
  }
  return problems.count === before ? settings.getProperties() : undefined;
}

/**
 * The text a setting reads: its variable's, and for a setting declared with
 * `fileEnv` the text of the file that variable names, after a line break
 * (travis trusts both certificates when both are given).
 */
function variableText(leaf: SettingLeaf, variable: string, env: NodeJS.ProcessEnv, problems: Problems): string | undefined {
  const own = env[variable];
  const fileVariable = (leaf.node.fileEnv as { env: string } | undefined)?.env;
  const path = fileVariable === undefined ? undefined : env[fileVariable];
  if (fileVariable === undefined || path === undefined || path === '') return own;
  let fileText: string;
  try {
    fileText = readFileSync(path, 'utf8');
  } catch (err) {
    problems.add(fileVariable, `cannot read the file: ${errorMessage(err)}`);
    return own;
  }
  return own === undefined || own.trim() === '' ? fileText : `${own}\n${fileText}`;
}

/** A value's problem, quoting the value when that can't reveal a secret. */
function describeBadValue(node: convict.SchemaObj, raw: string, problem: string): string {
  // Secrets and URL-valued settings are never repeated, whatever the value looks like (a URL
  // missing its scheme, `user:pw@host`, is still a password); nor is anything with a `user@`
  // part, nor a value the message already quotes.
  const revealing = node.sensitive === true || isUrlSetting(node) || raw.includes('@');
  if (revealing || problem.includes(JSON.stringify(raw))) return problem;
  const shown = raw.length > 60 ? `${raw.slice(0, 60)}...` : raw;
  return `${problem} (got ${JSON.stringify(shown)})`;
}

