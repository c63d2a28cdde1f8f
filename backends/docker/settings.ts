/**
 * Settings of the `docker` backend (`TRAVIS_WORKER_DOCKER_<KEY>`), named and
 * defaulted as travis-ci/worker's backend/docker.go reads them, and turning
 * the operator's text (byte sizes, `key:value` maps, space-separated lists)
 * into what the backend uses. Every parse error is an `Error` saying what is
 * wrong; `validateSettings` collects them when the configuration is loaded.
 */
import { availableParallelism } from 'node:os';
import { settingProblems, type SettingProblem, type SettingsSchema } from '../../src/backend/kit.js';
import { readTlsFiles } from './api.js';

export interface DockerSettings {
  /** `unix:///path`, `tcp://host:port` (or `http(s)://`); default the local engine's socket. */
  endpoint: string;
  /** Same as `endpoint` (docker's own `DOCKER_HOST` name); `endpoint` wins when both are set. */
  host: string;
  /** Directory holding `ca.pem`, `cert.pem`, `key.pem`: TCP with TLS. Empty = plain. */
  certPath: string;
  /** Verify the engine's certificate against `ca.pem` (travis skipped it unless `TLS_VERIFY` was set). */
  tlsVerify: boolean;
  /** Engine API version, e.g. `1.41`; empty = the engine's own, capped at the newest this backend knows. */
  apiVersion: string;
  /** The container's command, split on spaces; default `/sbin/init`. */
  cmd: string;
  /** What runs the script (over SSH, or through exec in native mode), split on spaces. */
  execCmd: string;
  /** Between exec inspections while waiting for a script's exit code, in ms. */
  inspectInterval: number;
  /** `path:options` tmpfs mounts separated by spaces or `+`. */
  tmpfsMap: string;
  /** Bind mounts (`src:dst[:opts]`) separated by spaces. */
  binds: string;
  /** Memory per container (`4GiB`, `512M`, bytes); `0` = no limit. */
  memory: string;
  /** Size of `/dev/shm` per container; `0` = the engine's default. */
  shm: string;
  /** Cores reserved for each container (its own cpuset); `0` = no pinning. */
  cpus: number;
  /** How many cores the engine's host has to hand out; `0` = this machine's count. */
  cpuSetSize: number;
  /** Run the script through the Engine API (archive + exec) instead of SSH. */
  native: boolean;
  /** Allocate a terminal for a native exec (as travis does); without one the output is demultiplexed. */
  nativeTty: boolean;
  privileged: boolean;
  /** Security options separated by spaces, e.g. `seccomp=unconfined`. */
  securityOpt: string;
  /** Extra labels, `key:value` pairs separated by commas or spaces. */
  containerLabels: string;
  /** `tag` (find the image by tag on the engine) or `env` (names from `IMAGE_<NAME>` only). */
  imageSelectorType: string;
  /** Pull an image the engine does not have (else a missing image fails the start). */
  pull: boolean;
  /** Network the containers join and whose address SSH dials; empty = the engine's default. */
  network: string;
  /** Grace period between the stop signal and the kill when a container is destroyed, in ms. */
  stopTimeout: number;
  /** Per SSH connection attempt, in ms. */
  sshDialTimeout: number;
  httpProxy: string;
  httpsProxy: string;
  ftpProxy: string;
  noProxy: string;
  /** `IMAGE_<NAME>` variables, name lower-cased: image per language (or, in `env` mode, per name). */
  images: Record<string, string>;
}

export const settingsSchema: SettingsSchema<Omit<DockerSettings, 'images'>> = {
  endpoint: { doc: 'Docker engine address: unix:///path or tcp://host:port (default unix:///var/run/docker.sock)', format: String, default: '', url: true },
  host: { doc: 'same as ENDPOINT (docker\'s DOCKER_HOST); ENDPOINT wins when both are set', format: String, default: '', url: true },
  certPath: { doc: 'directory with ca.pem, cert.pem and key.pem: talk TLS to a tcp:// engine', format: String, default: '' },
  tlsVerify: { doc: 'verify the engine\'s certificate (false restores travis\' default of not verifying)', format: Boolean, default: true },
  apiVersion: { doc: 'Engine API version to use, e.g. 1.41 (default: the engine\'s own, up to 1.47)', format: String, default: '' },
  cmd: { doc: 'command the container runs, split on spaces', format: String, default: '/sbin/init' },
  execCmd: { doc: 'command that runs the build script (over SSH or exec), split on spaces', format: String, default: 'bash /home/travis/build.sh' },
  inspectInterval: { doc: 'pause between exec inspections while waiting for a script\'s exit code', format: 'duration', default: 500 },
  tmpfsMap: {
    doc: 'tmpfs mounts, path:options separated by spaces or "+" (example "/run:rw,exec+/run/lock:rw,exec")',
    format: String,
    default: '/run:rw,nosuid,nodev,exec,noatime,size=65536k',
  },
  binds: { doc: 'bind mounts, src:dst[:options] separated by spaces', format: String, default: '' },
  memory: { doc: 'memory limit per container (e.g. 4GiB, 512M; 0 = none)', format: String, default: '4GiB' },
  shm: { doc: 'size of /dev/shm per container (0 = the engine\'s default)', format: String, default: '64MiB' },
  cpus: { doc: 'cores pinned to each container, never shared by two jobs (0 = no pinning)', format: 'nat', default: 2 },
  cpuSetSize: { doc: 'cores the engine\'s host has to hand out (0 = this machine\'s count; at least 2)', format: 'nat', default: 0 },
  native: { doc: 'upload and run the script through the Engine API (archive + exec) instead of SSH', format: Boolean, default: false },
  nativeTty: { doc: 'give a native exec a terminal, as SSH runs do', format: Boolean, default: true },
  privileged: { doc: 'run containers privileged', format: Boolean, default: false },
  securityOpt: { doc: 'security options separated by spaces (e.g. seccomp=unconfined)', format: String, default: '' },
  containerLabels: { doc: 'extra labels for each container, key:value pairs separated by commas or spaces', format: String, default: '' },
  imageSelectorType: { doc: 'how the image is chosen: tag (by tag on the engine) or env (IMAGE_<NAME> only)', format: ['tag', 'env'], default: 'tag' },
  pull: { doc: 'pull an image the engine does not have (otherwise the job is requeued with an error naming it)', format: Boolean, default: false },
  network: { doc: 'network containers join; SSH dials the container\'s address on it (default: the engine\'s default network)', format: String, default: '' },
  stopTimeout: { doc: 'grace period between stop and kill when a container is destroyed', format: 'duration', default: 30_000 },
  sshDialTimeout: { doc: 'time allowed for one SSH connection attempt', format: 'duration', default: 5_000 },
  httpProxy: { doc: 'HTTP_PROXY for native runs', format: String, default: '', url: true },
  httpsProxy: { doc: 'HTTPS_PROXY for native runs', format: String, default: '', url: true },
  ftpProxy: { doc: 'FTP_PROXY for native runs', format: String, default: '', url: true },
  noProxy: { doc: 'NO_PROXY for native runs', format: String, default: '' },
};

/** Where the local engine listens when no endpoint is set (docker's own default). */
export const DEFAULT_ENDPOINT = 'unix:///var/run/docker.sock';
/** travis' floor: fewer than two cores to hand out is treated as two. */
const MIN_CPU_SET_SIZE = 2;

const BYTE_UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1e3,
  kb: 1e3,
  m: 1e6,
  mb: 1e6,
  g: 1e9,
  gb: 1e9,
  t: 1e12,
  tb: 1e12,
  ki: 2 ** 10,
  kib: 2 ** 10,
  mi: 2 ** 20,
  mib: 2 ** 20,
  gi: 2 ** 30,
  gib: 2 ** 30,
  ti: 2 ** 40,
  tib: 2 ** 40,
};

/**
 * A size as travis reads it (go-humanize's ParseBytes): `4G` is 4*10^9,
 * `4GiB` is 4*2^30, a bare number is bytes. Throws a plain `Error`.
 */
export function parseBytes(text: string): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  const unit = match?.[2]?.toLowerCase() ?? '';
  const factor = BYTE_UNITS[unit];
  if (match === null || factor === undefined) throw new Error(`"${text}" is not a size (write it like 4GiB, 512M or 1073741824)`);
  return Math.round(Number(match[1]) * factor);
}

/** travis' str2map: `key:value` pairs split on any of `separators`; values may be URL-escaped. */
export function parseMap(text: string, separators: string): Record<string, string> {
  const result: Record<string, string> = {};
  const split = new RegExp(`[${separators.replace(/[\]\\^-]/g, '\\$&')}]+`);
  for (const pair of text.split(split)) {
    const colon = pair.indexOf(':');
    const key = (colon === -1 ? pair : pair.slice(0, colon)).trim();
    if (key === '') continue;
    const value = colon === -1 ? '' : pair.slice(colon + 1).trim();
    result[key] = unescapeValue(value);
  }
  return result;
}

/** URL-unescape like Go's QueryUnescape; text that is not valid escaping stays as it is. */
function unescapeValue(value: string): string {
  try {
    return decodeURIComponent(value.replace(/\+/g, ' '));
  } catch {
    return value;
  }
}

/** Words separated by whitespace (travis splits these settings on spaces). */
export function words(text: string): string[] {
  return text.split(/\s+/).filter((word) => word !== '');
}

/** Where the engine is and how to talk to it. */
export type EngineAddress =
  | { kind: 'unix'; socketPath: string; label: string }
  | { kind: 'tcp'; origin: string; tls: boolean; label: string };

/** The setting the engine's address comes from: ENDPOINT wins over HOST. */
function addressSetting(settings: Pick<DockerSettings, 'endpoint'>): 'endpoint' | 'host' {
  return settings.endpoint !== '' ? 'endpoint' : 'host';
}

/** The endpoint setting as an address; `tcp://` becomes https when a cert path is set. */
export function engineAddress(settings: Pick<DockerSettings, 'endpoint' | 'host' | 'certPath'>): EngineAddress {
  const text = settings.endpoint !== '' ? settings.endpoint : settings.host !== '' ? settings.host : DEFAULT_ENDPOINT;
  if (text.startsWith('unix://')) {
    const socketPath = text.slice('unix://'.length);
    if (socketPath === '') throw new Error(`"${text}" names no socket`);
    return { kind: 'unix', socketPath, label: text };
  }
  const match = /^(tcp|http|https):\/\/([^/]+)\/?$/.exec(text);
  if (match === null) throw new Error('is not unix:///path or tcp://host:port');
  const tls = match[1] === 'https' || (match[1] === 'tcp' && settings.certPath !== '');
  return { kind: 'tcp', origin: `${tls ? 'https' : 'http'}://${match[2] as string}`, tls, label: text };
}

/** What `create` compiles the settings into: parsed once, at startup. */
export interface CompiledSettings {
  cmd: string[];
  execCmd: string[];
  tmpfs: Record<string, string>;
  binds: string[];
  securityOpt: string[];
  labels: Record<string, string>;
  /** Bytes; 0 = no limit. */
  memoryBytes: number;
  /** Bytes; 0 = the engine's default. */
  shmBytes: number;
  cpuSetSize: number;
  /** `KEY=value` lines for a native exec. */
  proxyEnv: string[];
}

/** Words of a command setting; throws when there are none. */
function command(text: string, missing: string): string[] {
  const parts = words(text);
  if (parts.length === 0) throw new Error(missing);
  return parts;
}

const CMD_MISSING = "is empty: name the container's command (default /sbin/init)";
const EXEC_CMD_MISSING = 'is empty: name the command that runs the script';

/** Cores there are to hand out, at least travis' floor. */
function cpuSetSizeOf(settings: Pick<DockerSettings, 'cpuSetSize'>): number {
  return Math.max(MIN_CPU_SET_SIZE, settings.cpuSetSize === 0 ? availableParallelism() : settings.cpuSetSize);
}

/** What the schema can't check (the backend's `validate` hook): every problem, keyed by setting. */
export function validateSettings(settings: DockerSettings): SettingProblem[] {
  let address: EngineAddress | undefined;
  return settingProblems([
    [addressSetting(settings), () => (address = engineAddress(settings))],
    // Read now, as the engine client reads them, so a missing file stops startup rather than every job.
    ['certPath', () => address?.kind === 'tcp' && address.tls && settings.certPath !== '' && readTlsFiles(settings.certPath)],
    ['memory', () => parseBytes(settings.memory)],
    ['shm', () => parseBytes(settings.shm)],
    ['cmd', () => command(settings.cmd, CMD_MISSING)],
    ['execCmd', () => command(settings.execCmd, EXEC_CMD_MISSING)],
    [
      'cpus',
      () => {
        const size = cpuSetSizeOf(settings);
        if (settings.cpus > size) throw new Error(`${settings.cpus} is more than the ${size} cores there are (TRAVIS_WORKER_DOCKER_CPU_SET_SIZE)`);
      },
    ],
  ]);
}

/** Settings that passed `validateSettings`, parsed once for the backend. */
export function compileSettings(settings: DockerSettings): CompiledSettings {
  const proxyEnv: string[] = [];
  for (const [name, value] of [
    ['HTTP_PROXY', settings.httpProxy],
    ['HTTPS_PROXY', settings.httpsProxy],
    ['FTP_PROXY', settings.ftpProxy],
    ['NO_PROXY', settings.noProxy],
  ] as const) {
    if (value !== '') proxyEnv.push(`${name}=${value}`, `${name.toLowerCase()}=${value}`);
  }
  return {
    cmd: command(settings.cmd, CMD_MISSING),
    execCmd: command(settings.execCmd, EXEC_CMD_MISSING),
    tmpfs: parseMap(settings.tmpfsMap, ' +'),
    binds: words(settings.binds),
    securityOpt: words(settings.securityOpt),
    labels: parseMap(settings.containerLabels, ' ,'),
    memoryBytes: parseBytes(settings.memory),
    shmBytes: parseBytes(settings.shm),
    cpuSetSize: cpuSetSizeOf(settings),
    proxyEnv,
  };
}
