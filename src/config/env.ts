/**
 * How a convict schema meets `TRAVIS_WORKER_*` variables: naming each
 * setting's variable, parsing the text of a variable strictly (convict's own
 * coercion turns `no` into `true` and `12abc` into 12), and writing a value
 * back as the text an operator would put in an env file. Used by the loader
 * in `load.ts` for the core settings and for every backend's settings.
 */
import type convict from 'convict';
import { MASK, maskUrl, maskUrlList } from '../redact.js';
import { settingFormat } from './formats.js';

/** Every mayfly (and travis-ci/worker) variable starts with this. */
export const ENV_PREFIX = 'TRAVIS_WORKER_';

/** One setting of a schema: its dotted convict path and its declaration. */
export interface SettingLeaf {
  /** Convict path, e.g. `scriptsDir` or `ssh.keyPath`. */
  path: string;
  /** The path's parts, for naming the variable. */
  parts: readonly string[];
  node: convict.SchemaObj;
}

/**
 * The settings of a schema, walking nested groups the way convict does: an
 * object without `default` is a group, anything else is a setting (a bare
 * value is shorthand for `{ default: value }`).
 */
export function schemaLeaves(schema: object, parents: readonly string[] = []): SettingLeaf[] {
  const leaves: SettingLeaf[] = [];
  for (const [key, value] of Object.entries(schema)) {
    const parts = [...parents, key];
    if (isGroup(value)) {
      leaves.push(...schemaLeaves(value, parts));
    } else {
      const node = isSettingObject(value) ? (value as convict.SchemaObj) : { default: value as unknown };
      leaves.push({ path: parts.join('.'), parts, node });
    }
  }
  return leaves;
}

function isGroup(value: unknown): value is object {
  return isSettingObject(value) && !('default' in value);
}

function isSettingObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && Object.keys(value).length > 0;
}

/** `scriptsDir` -> `SCRIPTS_DIR`, `imageURL` -> `IMAGE_URL`, `gpu-count` -> `GPU_COUNT`. */
export function upperSnake(name: string): string {
  return name
    .replace(/([a-z0-9])([A-Z])/g, '$1_$2')
    .replace(/([A-Z]+)([A-Z][a-z])/g, '$1_$2')
    .replace(/[^A-Za-z0-9]+/g, '_')
    .toUpperCase();
}

/** The variable of a backend's setting: `TRAVIS_WORKER_<BACKEND>_<KEY>` (as travis' ProviderConfig reads them). */
export function backendEnvName(backendName: string, parts: readonly string[]): string {
  return `${ENV_PREFIX}${upperSnake(backendName)}_${parts.map(upperSnake).join('_')}`;
}

/** The start of a setting family's variables: `TRAVIS_WORKER_<BACKEND>_<PREFIX>_` (then a free-form name). */
export function familyEnvPrefix(backendName: string, prefix: string): string {
  return `${ENV_PREFIX}${upperSnake(backendName)}_${prefix}_`;
}

/** What the text of a variable must look like before convict sees it. */
type TextKind = 'boolean' | 'integer' | 'number' | 'text';

const INTEGER_FORMATS = new Set(['int', 'integer', 'nat', 'port']);

function textKind(node: convict.SchemaObj): TextKind {
  const format: unknown = node.format;
  if (format === Boolean || format === 'Boolean' || format === 'boolean') return 'boolean';
  if (format === Number || format === 'Number' || format === 'number') return 'number';
  if (typeof format === 'string') return INTEGER_FORMATS.has(format) ? 'integer' : 'text';
  if (format === String || format === Object || format === Array || format === RegExp || Array.isArray(format)) {
    return 'text';
  }
  // No format, or a validator function: the default's type says what the text means.
  if (typeof node.default === 'boolean') return 'boolean';
  if (typeof node.default === 'number') return 'number';
  return 'text';
}

// Go's strconv.ParseBool (1 t T TRUE true True, and the false ones), which travis' flags use, in
// any case, plus yes/no; empty is false, as travis' flag library reads `TRAVIS_WORKER_X=`.
const TRUE_WORDS = new Set(['1', 't', 'true', 'yes']);
const FALSE_WORDS = new Set(['0', 'f', 'false', 'no', '']);

/** A boolean variable's text (`true`/`false`, `t`/`f`, `1`/`0`, `yes`/`no`, any case). */
export function parseFlag(text: string): boolean {
  const word = text.trim().toLowerCase();
  if (TRUE_WORDS.has(word)) return true;
  if (FALSE_WORDS.has(word)) return false;
  throw new Error('must be true or false (t/f, 1/0 and yes/no work too)');
}

/**
 * The value to hand to convict for a variable's text: what the setting's
 * format parses it to, else booleans and numbers parsed strictly and
 * anything else unchanged for convict's coercion (durations, lists). Throws an `Error` whose message says what is expected.
 */
export function parseEnvText(node: convict.SchemaObj, text: string): unknown {
  const parse = settingFormat(node)?.parse;
  if (parse !== undefined) return parse(text);
  const trimmed = text.trim();
  switch (textKind(node)) {
    case 'boolean':
      return parseFlag(trimmed);
    case 'integer':
      if (!/^[+-]?\d+$/.test(trimmed)) throw new Error('must be a whole number');
      return Number(trimmed);
    case 'number': {
      const value = trimmed === '' ? Number.NaN : Number(trimmed);
      if (!Number.isFinite(value)) throw new Error('must be a number');
      return value;
    }
    case 'text':
      return text;
  }
}

/** True when the setting has no default and must be given (convict's convention: `default: null`, not nullable). */
export function isRequired(node: convict.SchemaObj): boolean {
  return node.default === null && node.nullable !== true;
}

/**
 * True for a backend setting declared `literal: true`: taken as written,
 * never URL-unescaped as travis' provider values are. For settings travis
 * has no counterpart of whose text `+` and `%` belong to (a private key, a
 * password): no env file written for travis carries them escaped.
 */
export function isLiteralSetting(node: convict.SchemaObj): boolean {
  return node.literal === true;
}

/** True for a setting declared `url: true` (or `url: 'list'`, several comma-separated): its value may carry credentials in the URL. */
export function isUrlSetting(node: convict.SchemaObj): boolean {
  return node.url === true || node.url === 'list';
}

/**
 * A value as an operator would write it in an env file: durations the Go way,
 * lists comma-separated, secrets masked and URLs masked by `maskUrl` (an
 * empty secret stays empty, which tells the operator it is unset without
 * revealing anything).
 */
export function formatSettingValue(node: convict.SchemaObj, value: unknown): string {
  const text = plainText(node, value);
  if (node.sensitive === true) return text === '' ? '' : MASK;
  if (node.url === 'list') return maskUrlList(text);
  return isUrlSetting(node) ? maskUrl(text) : text;
}

function plainText(node: convict.SchemaObj, value: unknown): string {
  if (value === undefined || value === null) return '';
  const render = settingFormat(node)?.render;
  if (render !== undefined) return render(value);
  if (Array.isArray(value)) return value.map(String).join(',');
  if (typeof value === 'object') return JSON.stringify(value);
  return String(value);
}

/** `export NAME="value"`, quoted so that a POSIX shell sourcing the line gets `value` back. */
export function exportLine(name: string, value: string): string {
  return `export ${name}="${value.replace(/[\\"$`]/g, '\\$&')}"`;
}

/** Levenshtein distance, for "did you mean" suggestions. */
export function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const substitution = (previous[j - 1] as number) + (a[i - 1] === b[j - 1] ? 0 : 1);
      current.push(Math.min((previous[j] as number) + 1, (current[j - 1] as number) + 1, substitution));
    }
    previous = current;
  }
  return previous[b.length] as number;
}

/** The known name closest to `name`, if one is within `maxDistance` edits. */
export function closestName(name: string, known: Iterable<string>, maxDistance = 2): string | undefined {
  let best: string | undefined;
  let bestDistance = maxDistance + 1;
  for (const candidate of known) {
    const distance = editDistance(name, candidate);
    if (distance < bestDistance) {
      best = candidate;
      bestDistance = distance;
    }
  }
  return best;
}
