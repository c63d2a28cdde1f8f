/**
 * The settings vocabulary shared by the core config and every backend's own
 * settings: convict schemas, plus the formats travis-ci/worker operators
 * already write (Go durations such as `3m30s`, comma-separated lists).
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

convict.addFormat({
  name: 'duration',
  validate(value: unknown) {
    if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
      throw new Error('must be a duration such as 50m, 3m30s or 500ms');
    }
    if (value > MAX_TIMER_MS) throw new Error(`must be at most ${formatGoDuration(MAX_TIMER_MS)} (the longest a timer can wait)`);
  },
  coerce: (value: unknown) => (typeof value === 'string' ? parseGoDuration(value) : value),
});

convict.addFormat({
  name: 'list',
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
});
