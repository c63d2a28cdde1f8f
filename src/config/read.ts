/**
 * Reading one schema's settings from the environment and the command line,
 * every problem collected under the name its value was given as so that one
 * error names them all.
 */
import { readFileSync } from 'node:fs';
import convict from 'convict';
import { ConfigError, errorMessage } from '../errors.js';
import { isLiteralSetting, isRequired, isUrlSetting, parseEnvText, schemaLeaves, type SettingLeaf } from './env.js';
import { settingText, type SettingInput, type SettingText } from './sources.js';

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
 * Read one schema's settings from `input`: each leaf from the variable
 * `envName(leaf)` names (or its flag or plain name, see sources.ts), its
 * text passed through `decode`, parsed strictly, then validated by convict.
 * Every problem goes to `problems` under the name the value was given as;
 * the result is undefined when there was any.
 */
export function readSettings(
  schema: object,
  envName: (leaf: SettingLeaf) => string,
  input: SettingInput,
  problems: Problems,
  decode: (variable: string, text: string) => string = (_variable, text) => text,
): Record<string, unknown> | undefined {
  const before = problems.count;
  const leaves = schemaLeaves(schema);
  // Values are set below one by one, so each failure is tied to its variable; convict itself reads nothing.
  const settings = convict<Record<string, unknown>>(schema as convict.Schema<Record<string, unknown>>, { env: {}, args: [] });
  const given = new Map<string, { leaf: SettingLeaf; source: string; raw: string | undefined }>();
  for (const leaf of leaves) {
    const variable = envName(leaf);
    const read = leafText(leaf, variable, input, problems);
    const source = read?.source ?? variable;
    const raw = read === undefined ? undefined : isLiteralSetting(leaf.node) ? read.text : decode(variable, read.text);
    given.set(leaf.path, { leaf, source, raw });
    if (isRequired(leaf.node) && (raw === undefined || raw.trim() === '')) {
      problems.add(source, 'is required but not set');
      continue;
    }
    if (raw === undefined) continue;
    let value: unknown;
    try {
      value = parseEnvText(leaf.node, raw);
    } catch (err) {
      problems.add(source, describeBadValue(leaf.node, raw, errorMessage(err)));
      continue;
    }
    try {
      // A format's own coercion (durations, JSON) runs here; its message may quote the value.
      settings.set(leaf.path, value);
    } catch (err) {
      problems.add(source, leaf.node.sensitive === true ? 'has a value its format rejects' : describeBadValue(leaf.node, raw, errorMessage(err)));
    }
  }
  try {
    settings.validate({ allowed: 'strict' });
  } catch (err) {
    // convict reports one `path: message[: value was ...]` line per setting; name the variable instead.
    for (const line of errorMessage(err).split('\n')) {
      const match = /^([^:\s]+): (.*?)(?:: value was .*)?$/.exec(line);
      const setting = match ? given.get(match[1] as string) : undefined;
      if (match === null || setting === undefined) {
        problems.add('(settings)', line);
        continue;
      }
      const { leaf, source, raw } = setting;
      problems.add(source, raw === undefined ? (match[2] as string) : describeBadValue(leaf.node, raw, match[2] as string));
    }
  }
  return problems.count === before ? settings.getProperties() : undefined;
}

/**
 * The text a setting reads, and where from: its variable's, and for a
 * setting declared with `fileEnv` the text of the file that variable names,
 * after a line break (travis trusts both certificates when both are given).
 */
function leafText(leaf: SettingLeaf, variable: string, input: SettingInput, problems: Problems): SettingText | undefined {
  const own = settingText(input, variable);
  const fileVariable = (leaf.node.fileEnv as { env: string } | undefined)?.env;
  const path = fileVariable === undefined ? undefined : settingText(input, fileVariable);
  if (path === undefined || path.text === '') return own;
  let fileText: string;
  try {
    fileText = readFileSync(path.text, 'utf8');
  } catch (err) {
    problems.add(path.source, `cannot read the file: ${errorMessage(err)}`);
    return own;
  }
  const text = own === undefined || own.text.trim() === '' ? fileText : `${own.text}\n${fileText}`;
  return { source: own?.source ?? path.source, text };
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

