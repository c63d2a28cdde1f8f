/**
 * Settings of the `ssh` backend (`TRAVIS_WORKER_SSH_<KEY>`), and turning the
 * operator's text (host list, key file) into what the backend uses.
 */
import { readFileSync } from 'node:fs';
import { errorMessage, settingProblems, type SettingProblem, type SettingsSchema, type SshTarget } from '../../src/backend/kit.js';

export interface SshBackendSettings {
  /** `host` or `host:port` (`[v6]:port`) entries; port 22 when omitted. Required. */
  hosts: string[];
  /** User to log in as; default `travis`. */
  user: string;
  /** Path of a private key file; empty = none. */
  keyPath: string;
  /** Private key text; empty = none. */
  key: string;
  /** Password; empty = none. */
  password: string;
  /** Command run on the host after each job (e.g. restore a snapshot); empty = none. */
  resetCommand: string;
  /** Consecutive infrastructure failures before a host is taken out of rotation; default 3. */
  maxFailures: number;
  /** How long a host stays out of rotation, in ms; default 10 minutes. */
  quarantine: number;
  /** Per connection attempt, in ms; default 5 s. */
  dialTimeout: number;
  /** Connection attempts for an upload; default 3 (a persistent host is either up or not). */
  uploadRetries: number;
  /** Pause between connection attempts, in ms; default 1 s. */
  uploadRetrySleep: number;
}

const DEFAULT_SSH_PORT = 22;

export const settingsSchema: SettingsSchema<SshBackendSettings> = {
  hosts: {
    doc: 'comma-separated hosts to run jobs on, one job per host at a time (host or host:port)',
    format: 'list',
    default: null,
  },
  user: { doc: 'user to log in as on every host', format: String, default: 'travis' },
  keyPath: { doc: 'private key file to log in with', format: String, default: '' },
  // Taken as written: a PEM key and a password hold `+` and `%`, which URL-unescaping would damage.
  key: { doc: 'private key (text) to log in with', format: String, default: '', sensitive: true, literal: true },
  password: { doc: 'password to log in with', format: String, default: '', sensitive: true, literal: true },
  resetCommand: {
    doc: 'command run on a host after each job, e.g. to restore a snapshot; if it fails the host counts as failed',
    format: String,
    default: '',
  },
  maxFailures: {
    doc: 'consecutive infrastructure failures (unreachable, upload, connection lost, reset) before a host is taken out of rotation',
    format: 'nat',
    default: 3,
  },
  quarantine: { doc: 'how long a failing host stays out of rotation', format: 'duration', default: 10 * 60_000 },
  dialTimeout: { doc: 'time allowed for one SSH connection attempt', format: 'duration', default: 5_000 },
  uploadRetries: { doc: 'SSH connection attempts before a host counts as unreachable', format: 'nat', default: 3 },
  uploadRetrySleep: { doc: 'pause between SSH connection attempts', format: 'duration', default: 1_000 },
};

/** One host of the rotation. */
export interface HostAddress {
  /** As the operator wrote it, for logs and the job log. */
  label: string;
  host: string;
  port: number;
}

/** Parse `host`, `host:port` or `[v6 address]:port`. Throws an `Error` quoting a bad entry. */
export function parseHost(entry: string): HostAddress {
  const bad = (why: string): Error => new Error(`"${entry}" ${why}`);
  const match = /^\[([^\]]+)\](?::(\d+))?$/.exec(entry) ?? /^([^:[\]]+)(?::(\d+))?$/.exec(entry);
  if (match === null) throw bad('is not host or host:port');
  const port = match[2] === undefined ? DEFAULT_SSH_PORT : Number(match[2]);
  if (!Number.isInteger(port) || port < 1 || port > 65_535) throw bad('has a port outside 1-65535');
  return { label: entry, host: match[1] as string, port };
}

/** The host list, validated: non-empty, each entry parseable, no duplicates. */
export function parseHosts(hosts: readonly string[] | null | undefined): HostAddress[] {
  const entries = (hosts ?? []).map((entry) => entry.trim()).filter((entry) => entry !== '');
  if (entries.length === 0) {
    throw new Error('is required by the ssh backend: name at least one host (host or host:port)');
  }
  const parsed = entries.map(parseHost);
  const seen = new Set<string>();
  for (const address of parsed) {
    const key = `${address.host}:${address.port}`;
    if (seen.has(key)) throw new Error(`${address.label} is listed twice`);
    seen.add(key);
  }
  return parsed;
}

/** How to log in, from `key`, `keyPath` and `password`. Throws an `Error` when the key file can't be read. */
export function credentials(settings: SshBackendSettings): Pick<SshTarget, 'privateKey' | 'password'> {
  const result: Pick<SshTarget, 'privateKey' | 'password'> = {};
  if (settings.key.trim() !== '') {
    result.privateKey = settings.key;
  } else if (settings.keyPath !== '') {
    try {
      result.privateKey = readFileSync(settings.keyPath);
    } catch (err) {
      throw new Error(`cannot read ${settings.keyPath}: ${errorMessage(err)}`, { cause: err });
    }
  }
  if (settings.password !== '') result.password = settings.password;
  return result;
}

/** What the schema can't check (the backend's `validate` hook): every problem, keyed by setting. */
export function validateSettings(settings: SshBackendSettings): SettingProblem[] {
  const problems = settingProblems([
    ['hosts', () => parseHosts(settings.hosts)],
    ['keyPath', () => credentials(settings)],
  ]);
  if (settings.key.trim() === '' && settings.keyPath === '' && settings.password === '') {
    problems.push({
      setting: 'keyPath',
      problem: 'is not set, nor TRAVIS_WORKER_SSH_KEY or TRAVIS_WORKER_SSH_PASSWORD: the ssh backend needs one of them to log in',
    });
  }
  return problems;
}
