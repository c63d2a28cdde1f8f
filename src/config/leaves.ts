/**
 * The kinds of core setting: each makes one leaf of the core schema (a
 * convict declaration that names its variable and says what it is for),
 * and its format turns the variable's text into the config's value and
 * back, derived values included (a host name defaulting to this machine's,
 * a token read from a file, a listen address as `{ host, port }`).
 */
import { readFileSync } from 'node:fs';
import { hostname as osHostname } from 'node:os';
import type convict from 'convict';
import { errorMessage } from '../errors.js';
import { formatListenAddress, parseListenAddress, type ListenConfig } from '../util/net.js';
import { parseFlag } from './env.js';
import { formatGoDuration, inlineFormat, parseGoDuration, validateDuration, type InlineFormat } from './formats.js';

/**
 * One core setting: everything about it in one declaration. `env` is the
 * variable it is read from (and echoed as); a setting with `fileEnv` also
 * reads the file that variable names, its text added to the setting's
 * (travis' `*_TLS_CERT_PATH`). Its other names, the plain variable and the
 * command-line flag, follow from `env` (sources.ts, cli.ts).
 */
export type CoreSettingSchema<T> = convict.SchemaObj<T> & { env: string; doc: string; fileEnv?: { env: string; doc: string } };

/**
 * An optional setting: unset is `null` (convict's "no value"), which
 * loading leaves out of the config (see unset.ts).
 */
type Optional<T> = CoreSettingSchema<T> & { default: null; nullable: true };

function optional<T>(env: string, doc: string, format: InlineFormat): Optional<T> {
  return { env, doc, format, default: null, nullable: true };
}

/** One of a few words (`values`, as written in the variable). */
export function oneOf<T extends string>(env: string, values: readonly T[], defaultValue: NoInfer<T>, doc: string): CoreSettingSchema<T> {
  return { env, doc, format: [...values], default: defaultValue };
}

export function text(env: string, defaultValue: string, doc: string): CoreSettingSchema<string> {
  return { env, doc, format: String, default: defaultValue };
}

export function flag(env: string, doc: string, defaultValue = false): CoreSettingSchema<boolean> {
  return { env, doc, format: Boolean, default: defaultValue };
}

/** A Go duration (`3m30s`); the value is milliseconds. */
export function duration(env: string, goDefault: string, doc: string): CoreSettingSchema<number> {
  return { env, doc, format: 'duration', default: parseGoDuration(goDefault) };
}

export function wholeNumber(env: string, defaultValue: number, doc: string, format: 'int' | 'nat' = 'nat'): CoreSettingSchema<number> {
  return { env, doc, format, default: defaultValue };
}

const isText = (value: unknown): void => {
  if (typeof value !== 'string') throw new Error('must be text');
};

/** Text where empty means unset. */
const optionalTextFormat = inlineFormat({ validate: isText, parse: (value) => (value === '' ? null : value) });

export function optionalText(env: string, doc: string, marks: { sensitive?: true; url?: true } = {}): Optional<string> {
  return { ...optional(env, doc, optionalTextFormat), ...marks };
}

/** A Go duration sent on in whole seconds, as travis does (`int(d.Seconds())`). */
const wholeSecondsFormat = inlineFormat({
  validate(value) {
    if (!Number.isInteger(value) || (value as number) < 0) throw new Error('must be a duration such as 5m');
  },
  parse(value) {
    const ms = parseGoDuration(value);
    validateDuration(ms);
    return Math.trunc(ms / 1000);
  },
  render: (value) => formatGoDuration((value as number) * 1000),
});

export function wholeSeconds(env: string, goDefault: string, doc: string): CoreSettingSchema<number> {
  return { env, doc, format: wholeSecondsFormat, default: Math.trunc(parseGoDuration(goDefault) / 1000) };
}

/** A URL of one of `schemes`. Messages never repeat the value: it may hold a password. */
/** The URLs of a setting that lists several, comma-separated (the nodes of a RabbitMQ cluster), blanks dropped. */
export function listedUrls(text: string): string[] {
  return text
    .split(',')
    .map((part) => part.trim())
    .filter((part) => part !== '');
}

function urlFormat(schemes: readonly string[], optional: boolean, list: boolean): InlineFormat {
  const expected = `a URL starting with ${schemes.map((scheme) => `${scheme}://`).join(' or ')}`;
  const validateOne = (value: string, problem: string): void => {
    let parsed: URL;
    try {
      parsed = new URL(value);
    } catch {
      throw new Error(problem);
    }
    if (!schemes.includes(parsed.protocol.slice(0, -1))) throw new Error(problem);
  };
  return inlineFormat({
    validate(value) {
      if (typeof value !== 'string') throw new Error('must be a URL');
      if (!list) return validateOne(value, `must be ${expected}`);
      const urls = listedUrls(value);
      if (urls.length === 0 && !(optional && value === '')) throw new Error(`must be ${expected}, or several separated by commas`);
      // Which one is bad is said by its place: the URL itself may hold a password.
      urls.forEach((one, index) => validateOne(one, urls.length === 1 ? `must be ${expected}` : `URL ${index + 1} of ${urls.length} must be ${expected}`));
    },
    parse: (value) => (value === '' && optional ? null : value),
  });
}

/** A URL where empty means unset. */
export function optionalUrl(env: string, doc: string, schemes: readonly string[]): Optional<string> {
  return { ...optional(env, doc, urlFormat(schemes, true, false)), url: true };
}

/** One URL or several, comma-separated (`listedUrls` splits them); each is masked on its own when shown. */
export function urlList(env: string, defaultValue: string, doc: string, schemes: readonly string[]): CoreSettingSchema<string> {
  return { env, doc, format: urlFormat(schemes, false, true), default: defaultValue, url: 'list' };
}

/** `urlList` where empty means unset. */
export function optionalUrlList(env: string, doc: string, schemes: readonly string[]): Optional<string> {
  return { ...optional(env, doc, urlFormat(schemes, true, true)), url: 'list' };
}

/** A command (split on spaces, no shell), trimmed; blank means none. */
const commandFormat = inlineFormat({ validate: isText, parse: (value) => (value.trim() === '' ? null : value.trim()) });

/** PEM text to trust, from the variable and the file `fileEnv` names; blank means none. */
const pemFormat = inlineFormat({
  validate: isText,
  parse: (value) => (value.trim() === '' ? null : value),
  describe: (value) => `${(value as string).length} characters of PEM (not shown)`,
});

export function pem(env: string, doc: string, fileEnv: string, fileDoc: string): Optional<string> {
  return { ...optional(env, doc, pemFormat), fileEnv: { env: fileEnv, doc: fileDoc } };
}

/** A secret given as itself or, as travis reads it, as `file://path` to the file holding it; trimmed, blank means none. */
const secretOrFileFormat = inlineFormat({
  validate: isText,
  parse(value) {
    let secret = value;
    if (value.startsWith('file://')) {
      try {
        secret = readFileSync(value.slice('file://'.length), 'utf8');
      } catch (err) {
        throw new Error(`cannot read the token file: ${errorMessage(err)}`);
      }
    }
    return secret.trim() === '' ? null : secret.trim();
  },
});

/** `host:port` where a listener binds (`:port` means 127.0.0.1); empty means not served. */
const listenAddressFormat = inlineFormat({
  validate(value) {
    if (typeof value !== 'object') throw new Error('must be host:port');
  },
  parse: (value) => (value === '' ? null : parseListenAddress(value)),
  render: (value) => formatListenAddress(value as ListenConfig),
});

/** A TCP port; blank means none (the listener is off). */
const optionalPortFormat = inlineFormat({
  validate(value) {
    if (!Number.isInteger(value)) throw new Error('must be a port number (0-65535) or empty');
  },
  parse(value) {
    const trimmed = value.trim();
    if (trimmed === '') return null;
    if (!/^\d{1,5}$/.test(trimmed) || Number(trimmed) > 65535) throw new Error('must be a port number (0-65535) or empty');
    return Number(trimmed);
  },
});

/** Text with the blanks around it dropped (an address, say). */
const trimmedFormat = inlineFormat({ validate: isText, parse: (value) => value.trim() });

/** travis' debug flag, read as the log level. */
const logLevelFormat = inlineFormat({
  validate(value) {
    if (value !== 'debug' && value !== 'info') throw new Error('must be true or false');
  },
  parse: (value) => (parseFlag(value) ? 'debug' : 'info'),
  render: (value) => String(value === 'debug'),
});

/** A name for this worker; blank means this machine's host name. */
const hostNameFormat = inlineFormat({ validate: isText, parse: (value) => (value.trim() === '' ? osHostname() : value) });

export function command(env: string, doc: string): Optional<string> {
  return optional(env, doc, commandFormat);
}

export function secretOrFile(env: string, doc: string): Optional<string> {
  return { ...optional<string>(env, doc, secretOrFileFormat), sensitive: true };
}

/** `user:password` for basic auth; empty means none. */
const credentialsFormat = inlineFormat({
  validate(value) {
    if (typeof value !== 'string' || !/^[^:]+:.+$/.test(value)) throw new Error('must be user:password');
  },
  parse: (value) => (value === '' ? null : value),
});

export function credentials(env: string, doc: string): Optional<string> {
  return { ...optional<string>(env, doc, credentialsFormat), sensitive: true };
}

export function listenAddress(env: string, doc: string): Optional<ListenConfig> {
  return optional(env, doc, listenAddressFormat);
}

export function optionalPort(env: string, doc: string): Optional<number> {
  return optional(env, doc, optionalPortFormat);
}

export function trimmed(env: string, defaultValue: string, doc: string): CoreSettingSchema<string> {
  return { env, doc, format: trimmedFormat, default: defaultValue };
}

/** True for a setting whose command-line flag may stand alone (`--debug`), as travis' boolean flags do. */
export function isSwitch(node: convict.SchemaObj): boolean {
  return node.format === Boolean || node.format === logLevelFormat;
}

export function logLevel(env: string, doc: string): CoreSettingSchema<'debug' | 'info'> {
  return { env, doc, format: logLevelFormat, default: 'info' };
}

export function hostName(env: string, doc: string): CoreSettingSchema<string> {
  return { env, doc, format: hostNameFormat, default: osHostname() };
}
