import { describe, expect, it } from 'vitest';
import { definition } from '../../backends/ssh/index.js';
import { HostPool } from '../../backends/ssh/pool.js';
import { parseHost, parseHosts, validateSettings, type SshBackendSettings } from '../../backends/ssh/settings.js';
import { NoCapacityError } from '../../src/errors.js';
import { silentLogger } from '../../src/logger.js';

const settings: SshBackendSettings = {
  hosts: ['mini-1'],
  user: 'travis',
  keyPath: '',
  key: '',
  password: 'secret',
  resetCommand: '',
  maxFailures: 3,
  quarantine: 600_000,
  dialTimeout: 5_000,
  uploadRetries: 3,
  uploadRetrySleep: 1_000,
};

describe('ssh backend settings', () => {
  it('parses host, host:port and [v6]:port', () => {
    expect(parseHost('mini-1')).toEqual({ label: 'mini-1', host: 'mini-1', port: 22 });
    expect(parseHost('10.0.0.5:2222')).toEqual({ label: '10.0.0.5:2222', host: '10.0.0.5', port: 2222 });
    expect(parseHost('[fd00::1]:2200')).toEqual({ label: '[fd00::1]:2200', host: 'fd00::1', port: 2200 });
  });

  it('rejects bad entries, an empty list and duplicates', () => {
    for (const bad of [['a:b:c'], ['host:0'], ['host:70000'], [], [' '], ['a', 'a:22']]) {
      expect(() => parseHosts(bad)).toThrow(/is not host or host:port|outside 1-65535|is required|listed twice/);
    }
  });

  it('refuses settings without hosts or credentials, each problem keyed by its setting', () => {
    expect(validateSettings(settings)).toEqual([]);
    expect(definition.validate?.({ ...settings, hosts: [] }).map((problem) => problem.setting)).toEqual(['hosts']);
    expect(validateSettings({ ...settings, password: '' }).map((problem) => problem.setting)).toEqual(['keyPath']);
    expect(validateSettings({ ...settings, password: '', keyPath: '/nonexistent/key' })).toEqual([
      { setting: 'keyPath', problem: expect.stringMatching(/^cannot read \/nonexistent\/key/) },
    ]);
  });
});

describe('HostPool', () => {
  const hosts = parseHosts(['a', 'b', 'c']);
  const never = new AbortController().signal;

  it('hands out the least recently used free host', async () => {
    const pool = new HostPool(hosts, { maxFailures: 1, quarantineMs: 600_000, logger: silentLogger });
    const taken: string[] = [];
    for (let n = 0; n < 5; n += 1) {
      const lease = await pool.acquire(never);
      taken.push(lease.address.label);
      lease.release({ ok: true });
    }
    expect(taken).toEqual(['a', 'b', 'c', 'a', 'b']);
    pool.close();
  });

  it('quarantines after maxFailures consecutive failures; a success resets the count', async () => {
    const pool = new HostPool(hosts.slice(0, 1), { maxFailures: 2, quarantineMs: 600_000, logger: silentLogger });
    (await pool.acquire(never)).release({ ok: false, reason: 'x' });
    (await pool.acquire(never)).release({ ok: true });
    (await pool.acquire(never)).release({ ok: false, reason: 'x' });
    expect(pool.quarantined()).toEqual([]);
    (await pool.acquire(never)).release({ ok: false, reason: 'x' });
    expect(pool.quarantined()).toEqual(['a']);
    await expect(pool.acquire(never)).rejects.toBeInstanceOf(NoCapacityError);
    pool.close();
  });

  it('makes a waiter wait while the only other host is quarantined, and wakes it on release', async () => {
    const pool = new HostPool(hosts.slice(0, 2), { maxFailures: 1, quarantineMs: 600_000, logger: silentLogger });
    (await pool.acquire(never)).release({ ok: false, reason: 'x' }); // a: out
    const holder = await pool.acquire(never); // b
    const waiting = pool.acquire(never);
    holder.release({ ok: true });
    expect((await waiting).address.label).toBe('b');
    pool.close();
  });
});
