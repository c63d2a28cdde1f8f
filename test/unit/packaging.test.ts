/**
 * The deployment files say what the drain needs: the signal that starts it,
 * a stop timeout longer than it, a dedicated unprivileged user, the env
 * file, a health check on the control API. Checked here because neither
 * systemd nor a Docker engine runs in every test environment.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { CORE_SETTINGS } from '../../src/config/schema.js';
import { parseListenAddress } from '../../src/util/net.js';

const read = (path: string): string => readFileSync(fileURLToPath(new URL(`../../${path}`, import.meta.url)), 'utf8');

/** Where tsc (tsconfig.build.json, outDir dist, rootDir .) puts bin/mayfly.ts. */
const EXECUTABLE = 'dist/bin/mayfly.js';

/** The drain's default, in ms. */
const DRAIN_MS = CORE_SETTINGS.timeouts.shutdownMs.default as number;

/** `[Section]` -> key -> values (a key may repeat), comments and blank lines dropped. */
function parseUnit(text: string): Map<string, Map<string, string[]>> {
  const sections = new Map<string, Map<string, string[]>>();
  let current: Map<string, string[]> | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const section = /^\[(.+)\]$/.exec(line);
    if (section) {
      current = new Map();
      sections.set(section[1] as string, current);
      continue;
    }
    const [key, ...rest] = line.split('=');
    if (!current || key === undefined) throw new Error(`unit line outside a section: ${line}`);
    current.set(key, [...(current.get(key) ?? []), rest.join('=')]);
  }
  return sections;
}

/** A systemd time span (`50min`, `3000`, `1h 30min`) in ms. */
function systemdSpanMs(text: string): number {
  const units: Record<string, number> = { ms: 1, s: 1000, sec: 1000, m: 60_000, min: 60_000, h: 3_600_000, hr: 3_600_000 };
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  let total = 0;
  for (const part of text.split(/\s+/)) {
    const match = /^(\d+)([a-z]+)$/.exec(part);
    const unit = match ? units[match[2] as string] : undefined;
    if (!match || unit === undefined) throw new Error(`not a time span: ${text}`);
    total += Number(match[1]) * unit;
  }
  return total;
}

describe('systemd/mayfly.service', () => {
  const unit = parseUnit(read('systemd/mayfly.service'));
  const service = unit.get('Service') ?? new Map<string, string[]>();
  const value = (key: string): string | undefined => service.get(key)?.at(-1);

  it('runs mayfly as a dedicated user with the operator env file', () => {
    expect(value('User')).toBe('mayfly');
    expect(value('User')).not.toBe('root');
    expect(value('EnvironmentFile')).toBe('/etc/default/mayfly');
    expect(value('ExecStart')).toMatch(/\/mayfly$/);
    expect(unit.get('Install')?.get('WantedBy')).toEqual(['multi-user.target']);
  });

  it('lets the drain run: SIGTERM to mayfly, a stop timeout longer than the drain, restarts', () => {
    expect(value('KillSignal')).toBe('SIGTERM');
    expect(['mixed', 'process']).toContain(value('KillMode'));
    expect(systemdSpanMs(value('TimeoutStopSec') ?? '0')).toBeGreaterThan(DRAIN_MS);
    expect(value('Restart')).toBe('always');
  });

  it('is hardened', () => {
    expect(value('NoNewPrivileges')).toBe('yes');
    expect(value('ProtectSystem')).toBe('strict');
    expect(value('PrivateTmp')).toBe('yes');
    expect(value('ProtectHome')).toBe('yes');
    expect(value('CapabilityBoundingSet')).toBe('');
    // ProtectSystem=strict makes everything read-only: state must have a writable home.
    expect(value('StateDirectory')).toBe('mayfly');
  });
});

describe('package.json', () => {
  const manifest = JSON.parse(read('package.json')) as { bin: Record<string, string>; scripts: Record<string, string>; files: string[] };

  it('names the executable the build emits from bin/mayfly.ts, and ships it', () => {
    expect(read('bin/mayfly.ts')).toMatch(/^#!\/usr\/bin\/env node\n/);
    expect(manifest.bin).toEqual({ mayfly: EXECUTABLE });
    expect(manifest.scripts.start).toBe(`node ${EXECUTABLE}`);
    expect(manifest.files).toEqual(expect.arrayContaining(['dist/bin', 'dist/src', 'dist/backends']));
  });
});

describe('Dockerfile', () => {
  const dockerfile = read('Dockerfile').replace(/\\\n/g, ' ');
  const instructions = dockerfile
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'));
  const all = (name: string): string[] => instructions.filter((line) => line.startsWith(`${name} `)).map((line) => line.slice(name.length + 1).trim());

  it('is multi-stage and ships production dependencies only', () => {
    expect(all('FROM').length).toBeGreaterThanOrEqual(2);
    expect(dockerfile).toMatch(/npm ci --omit=dev/);
    expect(all('COPY').some((line) => line.startsWith('--from='))).toBe(true);
  });

  it('runs as a non-root user, stops with the drain signal, starts mayfly', () => {
    const user = all('USER').at(-1);
    expect(user).toBeDefined();
    expect(['root', '0']).not.toContain(user);
    expect(all('STOPSIGNAL')).toEqual(['SIGTERM']);
    const entrypoint = JSON.parse(all('ENTRYPOINT').at(-1) ?? '[]') as string[];
    expect(entrypoint.at(-1)).toBe('mayfly');
  });

  it('builds the executable from bin/ and links the file the build emits', () => {
    expect(all('COPY')).toEqual(expect.arrayContaining(['bin ./bin', 'src ./src', 'backends ./backends']));
    expect(dockerfile).toMatch(new RegExp(`ln -s /app/${EXECUTABLE.replaceAll('.', '\\.')} /usr/local/bin/mayfly`));
  });

  it('checks health at /healthz of the control API it configures', () => {
    const healthcheck = all('HEALTHCHECK').at(-1) ?? '';
    expect(healthcheck).toContain('/healthz');
    const env = /TRAVIS_WORKER_REMOTE_CONTROLLER_ADDR=(\S+)/.exec(all('ENV').join(' '));
    expect(env).not.toBeNull();
    const { port } = parseListenAddress((env as RegExpExecArray)[1] as string);
    expect(healthcheck).toContain(`127.0.0.1:${port}`);
  });

  it('is built on the Node major CI tests, the newest package.json admits', () => {
    const major = /^NODE_MAJOR=(\d+)$/m.exec(read('scripts/node24.sh'))?.[1];
    expect(major).toBeDefined();
    expect(all('ARG')).toContain(`NODE_IMAGE=node:${major}-bookworm-slim`);
    const engines = (JSON.parse(read('package.json')) as { engines: { node: string } }).engines.node;
    expect(engines.split('||').map((range) => range.trim()).at(-1)).toBe(`>=${major}`);
  });

  it('keeps secrets and build output out of the context', () => {
    const ignored = read('.dockerignore').split('\n');
    expect(ignored).toEqual(expect.arrayContaining(['.git', 'node_modules', 'dist', '*.env']));
  });
});

describe('.ci/run', () => {
  it('runs the suite again on Node 24, in a tree installed under it', () => {
    const script = read('.ci/run');
    expect(script).toMatch(/node24_bin=\$\(bash scripts\/node24\.sh\)[\s\S]*export PATH="\$node24_bin:\$PATH"[\s\S]*npm ci[^\n]*\n[\s\S]*npm test/);
  });
});

describe('docs/operations.md', () => {
  it('shows how to install, start, check and follow the service', () => {
    const page = read('docs/operations.md');
    const start = page.indexOf('## Install and run under systemd');
    expect(start).toBeGreaterThanOrEqual(0);
    const section = page.slice(start, page.indexOf('\n## ', start + 1));
    expect(section).toContain('systemctl enable --now mayfly');
    expect(section).toContain('systemctl status mayfly');
    expect(section).toContain('journalctl -u mayfly -f');
  });
});
