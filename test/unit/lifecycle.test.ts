/**
 * The worker's lifecycle table, the signal dispatch, and the operating
 * settings (listen addresses, auth, heartbeat token, OTLP endpoint).
 */
import { EventEmitter } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { backends } from '../../backends/index.js';
import { echoConfig } from '../../src/config/echo.js';
import { loadConfig } from '../../src/config/load.js';
import { isLoopback, parseListenAddress } from '../../src/util/net.js';
import { handleSignals, type SignalControl } from '../../src/lifecycle/signals.js';
import { IllegalTransitionError, Lifecycle, LifecycleError, canTransition, type WorkerState } from '../../src/lifecycle/state.js';
import { silentLogger } from '../../src/logger.js';

const STATES: WorkerState[] = ['STARTING', 'RUNNING', 'PAUSED', 'DRAINING', 'STOPPING', 'STOPPED'];

describe('Lifecycle', () => {
  it('allows exactly the documented moves', () => {
    const allowed = STATES.flatMap((from) => STATES.filter((to) => canTransition(from, to)).map((to) => `${from}->${to}`));
    expect(allowed).toEqual([
      'STARTING->RUNNING',
      'STARTING->STOPPING',
      'RUNNING->PAUSED',
      'RUNNING->DRAINING',
      'RUNNING->STOPPING',
      'PAUSED->RUNNING',
      'PAUSED->DRAINING',
      'PAUSED->STOPPING',
      'DRAINING->STOPPING',
      'STOPPING->STOPPED',
    ]);
  });

  it('throws on an illegal move and stays where it was', () => {
    const lifecycle = new Lifecycle();
    lifecycle.transition('RUNNING');
    lifecycle.transition('DRAINING');
    expect(() => lifecycle.transition('RUNNING')).toThrow(IllegalTransitionError);
    expect(() => lifecycle.transition('PAUSED')).toThrow('the worker cannot go from DRAINING to PAUSED');
    expect(lifecycle.state).toBe('DRAINING');
    expect(() => lifecycle.assertActive('resize the pool')).toThrow(LifecycleError);
  });

  it('reports each change', () => {
    const lifecycle = new Lifecycle();
    const changes: string[] = [];
    lifecycle.on('change', (to, from) => changes.push(`${from}->${to}`));
    lifecycle.transition('RUNNING');
    lifecycle.transition('PAUSED');
    lifecycle.transition('STOPPING');
    lifecycle.transition('STOPPED');
    expect(changes).toEqual(['STARTING->RUNNING', 'RUNNING->PAUSED', 'PAUSED->STOPPING', 'STOPPING->STOPPED']);
  });
});

describe('handleSignals', () => {
  function recorder(): SignalControl & { calls: string[] } {
    const calls: string[] = [];
    return {
      calls,
      drain: (reason) => calls.push(`drain ${reason}`),
      stop: (reason) => calls.push(`stop ${reason}`),
      togglePause: () => calls.push('togglePause'),
      increment: async () => {
        calls.push('increment');
      },
      decrement: () => {
        calls.push('decrement');
        throw new LifecycleError('cannot shrink the pool while the worker is DRAINING');
      },
      logStatus: (message) => calls.push(`status ${message}`),
    };
  }

  it('drains on the first SIGTERM or SIGINT and stops on the second', () => {
    const control = recorder();
    const source = new EventEmitter();
    const unhandle = handleSignals(control, silentLogger, source);
    source.emit('SIGINT', 'SIGINT');
    source.emit('SIGTERM', 'SIGTERM');
    source.emit('SIGUSR2', 'SIGUSR2');
    source.emit('SIGTTIN', 'SIGTTIN');
    source.emit('SIGTTOU', 'SIGTTOU');
    source.emit('SIGUSR1', 'SIGUSR1');
    unhandle();
    source.emit('SIGTERM', 'SIGTERM');
    expect(control.calls).toEqual(['drain SIGINT', 'stop second SIGTERM', 'togglePause', 'increment', 'decrement', 'status received SIGUSR1']);
    expect(source.listenerCount('SIGTERM')).toBe(0);
  });
});

describe('operating settings', () => {
  it('parses listen addresses, defaulting the host to loopback', () => {
    expect(parseListenAddress(':8080')).toEqual({ host: '127.0.0.1', port: 8080 });
    expect(parseListenAddress('0.0.0.0:9000')).toEqual({ host: '0.0.0.0', port: 9000 });
    expect(parseListenAddress('[::1]:6060')).toEqual({ host: '::1', port: 6060 });
    expect(() => parseListenAddress('8080')).toThrow('must be host:port');
    expect(() => parseListenAddress('host:70000')).toThrow('must be host:port');
    expect([isLoopback('127.0.0.1'), isLoopback('127.1.2.3'), isLoopback('::1'), isLoopback('0.0.0.0'), isLoopback('10.0.0.1')]).toEqual([
      true,
      true,
      true,
      false,
      false,
    ]);
  });

  it('loads the control, debug, hook, heartbeat and OTLP settings', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'mayfly-settings-'));
    try {
      await writeFile(join(dir, 'token'), '  s3cret-token\n');
      const config = loadConfig(backends, {
        TRAVIS_WORKER_SHUTDOWN_TIMEOUT: '90s',
        TRAVIS_WORKER_REMOTE_CONTROLLER_ADDR: ':8080',
        TRAVIS_WORKER_REMOTE_CONTROLLER_AUTH: 'ops:pw',
        TRAVIS_WORKER_PPROF_PORT: '6060',
        TRAVIS_WORKER_START_HOOK: ' /usr/local/bin/register  --up ',
        TRAVIS_WORKER_HEARTBEAT_URL: 'https://supervisor.example.com/hb',
        TRAVIS_WORKER_HEARTBEAT_URL_AUTH_TOKEN: `file://${join(dir, 'token')}`,
        OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318',
      });
      expect(config).toMatchObject({
        timeouts: { shutdownMs: 90_000 },
        control: { host: '127.0.0.1', port: 8080 },
        remoteAuth: 'ops:pw',
        debug: { host: '127.0.0.1', port: 6060 },
        hooks: { start: '/usr/local/bin/register  --up' },
        heartbeat: { url: 'https://supervisor.example.com/hb', authToken: 's3cret-token' },
        telemetry: { otlpEndpoint: 'http://collector:4318' },
      });
      const echoed = echoConfig(config, backends);
      expect(echoed).toContain('export TRAVIS_WORKER_REMOTE_CONTROLLER_AUTH="********"');
      expect(echoed).toContain('export TRAVIS_WORKER_REMOTE_CONTROLLER_ADDR="127.0.0.1:8080"');
      expect(echoed).not.toContain('s3cret-token');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('refuses a profiler off loopback without credentials, bad auth text and an unreadable token file', () => {
    expect(() => loadConfig(backends, { TRAVIS_WORKER_PPROF_PORT: '6060', TRAVIS_WORKER_PPROF_ADDR: '0.0.0.0' })).toThrow(
      /TRAVIS_WORKER_PPROF_ADDR: is not a loopback address/,
    );
    expect(() =>
      loadConfig(backends, { TRAVIS_WORKER_PPROF_PORT: '6060', TRAVIS_WORKER_PPROF_ADDR: '0.0.0.0', TRAVIS_WORKER_PPROF_NO_AUTH: 'true' }),
    ).toThrow(/TRAVIS_WORKER_PPROF_ADDR: is not a loopback address/);
    expect(() => loadConfig(backends, { TRAVIS_WORKER_REMOTE_CONTROLLER_AUTH: 'no-colon' })).toThrow(/TRAVIS_WORKER_REMOTE_CONTROLLER_AUTH: must be user:password/);
    expect(() => loadConfig(backends, { TRAVIS_WORKER_PPROF_PORT: 'sixty' })).toThrow(/TRAVIS_WORKER_PPROF_PORT: must be a port number/);
    expect(() => loadConfig(backends, { TRAVIS_WORKER_HEARTBEAT_URL_AUTH_TOKEN: 'file:///nonexistent/token' })).toThrow(
      /TRAVIS_WORKER_HEARTBEAT_URL_AUTH_TOKEN: cannot read the token file/,
    );
    expect(loadConfig(backends, {}).timeouts.shutdownMs).toBe(45 * 60_000);
  });

  it('refuses a debug port on loopback without credentials unless the operator opts in', () => {
    expect(() => loadConfig(backends, { TRAVIS_WORKER_PPROF_PORT: '6060' })).toThrow(
      /^invalid configuration: TRAVIS_WORKER_PPROF_PORT: is set, so the debug port needs TRAVIS_WORKER_REMOTE_CONTROLLER_AUTH: every process on this host can reach loopback/,
    );
    expect(loadConfig(backends, { TRAVIS_WORKER_PPROF_PORT: '6060', TRAVIS_WORKER_PPROF_NO_AUTH: 'true' }).debug).toEqual({
      host: '127.0.0.1',
      port: 6060,
      noAuth: true,
    });
  });
});
