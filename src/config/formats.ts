/**
 * The settings vocabulary shared by the core config and every backend's own
 * settings: convict schemas, formats that know how a value is read from a
 * variable's text and written back (`SettingFormat`), and the ones
 * travis-ci/worker operators already write (Go durations such as `3m30s`,
 * comma-separated lists).
 */
import convict from 'convict';
import { MAX_TIMER_MS } from '../util/timers.js';

/**
 * A convict schema. Backends declare theirs without `env`: the loader names
 * each key `TRAVIS_WORKER_<BACKEND>_<KEY>` (camelCase key upper-snake-cased).
 * Mark secrets `sensitive: true`; they are masked everywhere they are shown.
 * Mark URL-valued settings `url: true`: they are shown through `maskUrl`
 * (user, password, query masked) and error messages never quote them.
 */
export type SettingsSchema<T> = convict.Schema<T>;

const GO_DURATION = /^(?:(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h))+$/;
const GO_DURATION_PART = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)/g;
const UNIT_MS: Record<string, number> = {
  ns: 1e-6,
  us: 1e-3,
  µs: 1e-3,
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
};

/**
 * Parse a duration written the Go way (`time.ParseDuration`): `50m`, `3m30s`,
 * `500ms`, `1h`, `0`. Returns milliseconds. Throws on anything else, because
 * a bare `30` is ambiguous (seconds? minutes?) and Go rejects it too.
 */
export function parseGoDuration(text: string): number {
  const trimmed = text.trim();
  if (trimmed === '0') return 0;
  if (!GO_DURATION.test(trimmed)) {
    throw new Error(`"${text}" is not a duration (write it like 50m, 3m30s or 500ms)`);
  }
  let ms = 0;
  for (const [, amount, unit] of trimmed.matchAll(GO_DURATION_PART)) {
    ms += Number(amount) * (UNIT_MS[unit as string] as number);
  }
  return Math.round(ms);
}

/** Milliseconds back to Go's notation, e.g. 210000 -> `3m30s`, as `--echo-config` prints them. */
export function formatGoDuration(ms: number): string {
  if (ms === 0) return '0s';
  if (ms < 1000) return `${ms}ms`;
  const h = Math.floor(ms / 3_600_000);
  const m = Math.floor((ms % 3_600_000) / 60_000);
  const s = (ms % 60_000) / 1000;
  return `${h ? `${h}h` : ''}${h || m ? `${m}m` : ''}${s}s`;
}

/**
 * How a setting's value is read from a variable's text and written back,
 * beside convict's check of the value: the one place that knows both
 * directions, so loading and `--echo-config` cannot drift apart.
 */
export interface SettingFormat {
  /** convict's check of a value; throws an `Error` saying what is expected. */
  validate(value: unknown): void;
  /**
   * The value of a variable's text (a derived value: parsed, trimmed, read
   * from a file, unset when empty); throws an `Error` saying what is
   * expected. Without it the text goes to convict as is.
   */
  parse?(text: string): unknown;
  /** A value back as the text an operator would write; without it, `String(value)`. */
  render?(value: unknown): string;
  /** Set for a value `--echo-config` must not print even masked: what it prints instead (a description). */
  describe?(value: unknown): string;
}

/** Formats a schema names with a string (`format: 'duration'`), as registered with convict. */
const NAMED_FORMATS = new Map<string, SettingFormat>();

/** Register a format schemas name with a string; `coerce` is convict's, for defaults written as text (`'5m'`). */
function addNamedFormat(name: string, format: SettingFormat & { coerce?: (value: unknown) => unknown }): void {
  NAMED_FORMATS.set(name, format);
  convict.addFormat({ name, validate: format.validate, ...(format.coerce ? { coerce: format.coerce } : {}) });
}

/** A format a schema declares inline (`format: listenAddress`): a convict validator carrying its parse and render. */
export type InlineFormat = ((value: unknown) => void) & SettingFormat;

export function inlineFormat(format: SettingFormat): InlineFormat {
  return Object.assign((value: unknown) => format.validate(value), format);
}

/** A setting's format, named or inline, when it is one of these (not a convict built-in). */
export function settingFormat(node: convict.SchemaObj): SettingFormat | undefined {
  const format: unknown = node.format;
  if (typeof format === 'string') return NAMED_FORMATS.get(format);
  return typeof format === 'function' && 'validate' in format ? (format as InlineFormat) : undefined;
}

/** The check of a duration in ms: convict's, and the longest a timer can wait. */
export function validateDuration(value: unknown): void {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
    throw new Error('must be a duration such as 50m, 3m30s or 500ms');
  }
  if (value > MAX_TIMER_MS) throw new Error(`must be at most ${formatGoDuration(MAX_TIMER_MS)} (the longest a timer can wait)`);
}

addNamedFormat('duration', {
  validate: validateDuration,
  coerce: (value: unknown) => (typeof value === 'string' ? parseGoDuration(value) : value),
  render: (value) => formatGoDuration(value as number),
});

addNamedFormat('list', {
  validate(value: unknown) {
    if (!Array.isArray(value) || value.some((item) => typeof item !== 'string')) {
      throw new Error('must be a comma-separated list');
    }
  },
  coerce: (value: unknown) =>
    typeof value === 'string'
      ? value
          .split(',')
          .map((item) => item.trim())
          .filter((item) => item !== '')
      : value,
  render: (value) => (value as unknown[]).map(String).join(','),
});

// travis reads some provider switches with its own asBool rather than strconv.ParseBool: any
// text but these (in any case) turns them on, so `on` and `enabled` do and a typo does too.
const LOOSE_FALSE_WORDS = new Set(['0', 'no', 'off', 'false', '']);

/**
 * `format: 'loose-boolean'`: a switch read as travis reads the provider
 * settings it passes to asBool (EC2 and GCE `PUBLIC_IP`, `PREEMPTIBLE`, ...):
 * `0`, `no`, `off`, `false` and empty are false, anything else is true.
 */
addNamedFormat('loose-boolean', {
  validate(value: unknown) {
    if (typeof value !== 'boolean') throw new Error('must be true or false');
  },
  parse: (text) => !LOOSE_FALSE_WORDS.has(text.trim().toLowerCase()),
});
