import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { containerAddress, containerName } from '../../backends/docker/backend.js';
import { CpuSetPool } from '../../src/backend/cpusets.js';
import { readPullStream, splitImageName, type ContainerInfo } from '../../backends/docker/engine.js';
import { candidateTags, findByTag, isValidImageName } from '../../backends/docker/images.js';
import { compileSettings, engineAddress, parseBytes, parseMap, validateSettings } from '../../backends/docker/settings.js';
import { backends } from '../../backends/index.js';
import { loadConfig } from '../../src/config/load.js';
import { ConfigError } from '../../src/errors.js';
import { testDockerSettings } from '../helpers/docker.js';

describe('docker settings', () => {
  it('reads sizes the way travis does (go-humanize): SI and IEC units, bare bytes', () => {
    expect(parseBytes('4G')).toBe(4e9);
    expect(parseBytes('4GiB')).toBe(4 * 2 ** 30);
    expect(parseBytes('64MiB')).toBe(64 * 2 ** 20);
    expect(parseBytes('512m')).toBe(512e6);
    expect(parseBytes('1.5 KiB')).toBe(1536);
    expect(parseBytes('1073741824')).toBe(2 ** 30);
    expect(parseBytes('0')).toBe(0);
    expect(() => parseBytes('lots')).toThrow(/not a size/);
    expect(() => parseBytes('4 parsecs')).toThrow(/not a size/);
  });

  it('reads key:value maps with any of the separators, unescaping values', () => {
    expect(parseMap('/run:rw,exec+/run/lock:rw,exec', ' +')).toEqual({ '/run': 'rw,exec', '/run/lock': 'rw,exec' });
    expect(parseMap('/run:rw,exec /tmp:size%3D1m', ' +')).toEqual({ '/run': 'rw,exec', '/tmp': 'size=1m' });
    expect(parseMap('team:ci, owner:me flag', ' ,')).toEqual({ team: 'ci', owner: 'me', flag: '' });
    expect(parseMap('', ' ,')).toEqual({});
  });

  it('finds the engine: unix socket by default, tcp with TLS when a cert path is set', () => {
    expect(engineAddress({ endpoint: '', host: '', certPath: '' })).toEqual({ kind: 'unix', socketPath: '/var/run/docker.sock', label: 'unix:///var/run/docker.sock' });
    expect(engineAddress({ endpoint: '', host: 'tcp://10.0.0.5:2376', certPath: '/etc/docker/certs' })).toMatchObject({ kind: 'tcp', origin: 'https://10.0.0.5:2376', tls: true });
    expect(engineAddress({ endpoint: 'tcp://127.0.0.1:2375', host: 'unix:///ignored.sock', certPath: '' })).toMatchObject({ kind: 'tcp', origin: 'http://127.0.0.1:2375', tls: false });
    expect(validateSettings(testDockerSettings({ endpoint: 'ftp://x' }))).toEqual([{ setting: 'endpoint', problem: 'is not unix:///path or tcp://host:port' }]);
    expect(validateSettings(testDockerSettings({ endpoint: '', host: 'unix://' }))).toEqual([{ setting: 'host', problem: '"unix://" names no socket' }]);
  });

  it('compiles the settings once, after validation keyed each bad one by its setting', () => {
    const compiled = compileSettings(testDockerSettings({ cmd: '/sbin/init --log-level=info', memory: '1GiB', shm: '0', httpProxy: 'http://proxy:3128', binds: '/a:/a:ro /b:/b' }));
    expect(compiled.cmd).toEqual(['/sbin/init', '--log-level=info']);
    expect(compiled.memoryBytes).toBe(2 ** 30);
    expect(compiled.shmBytes).toBe(0);
    expect(compiled.binds).toEqual(['/a:/a:ro', '/b:/b']);
    expect(compiled.proxyEnv).toEqual(['HTTP_PROXY=http://proxy:3128', 'http_proxy=http://proxy:3128']);
    expect(validateSettings(testDockerSettings())).toEqual([]);
    const problems = validateSettings(testDockerSettings({ memory: 'much', cpus: 3, cpuSetSize: 2, execCmd: '  ' }));
    expect(problems.map((problem) => problem.setting)).toEqual(['memory', 'execCmd', 'cpus']);
    // Fewer than two cores to hand out counts as two, as in travis.
    expect(compileSettings(testDockerSettings({ cpuSetSize: 1 })).cpuSetSize).toBe(2);
  });
});

describe('docker settings through the loader', () => {
  it('reads TRAVIS_WORKER_DOCKER_* with travis\' names, and IMAGE_<NAME> into the images family', () => {
    const config = loadConfig(backends, {
      TRAVIS_WORKER_PROVIDER_NAME: 'docker',
      TRAVIS_WORKER_DOCKER_HOST: 'tcp://10.0.0.5:2376',
      TRAVIS_WORKER_DOCKER_NATIVE: 'true',
      TRAVIS_WORKER_DOCKER_CPU_SET_SIZE: '16',
      TRAVIS_WORKER_DOCKER_IMAGE_SELECTOR_TYPE: 'env',
      TRAVIS_WORKER_DOCKER_IMAGE_RUBY: 'travis:ruby',
      TRAVIS_WORKER_DOCKER_IMAGE_OBJECTIVE_C: 'travis:objc',
      TRAVIS_WORKER_DOCKER_INSPECT_INTERVAL: '250ms',
    });
    expect(config.backendSettings).toMatchObject({
      host: 'tcp://10.0.0.5:2376',
      native: true,
      cpuSetSize: 16,
      imageSelectorType: 'env',
      inspectInterval: 250,
      memory: '4GiB',
      cmd: '/sbin/init',
      images: { ruby: 'travis:ruby', objective_c: 'travis:objc' },
    });
  });

  it('refuses an unknown image selector', () => {
    expect(() => loadConfig(backends, { TRAVIS_WORKER_PROVIDER_NAME: 'docker', TRAVIS_WORKER_DOCKER_IMAGE_SELECTOR_TYPE: 'api' })).toThrow(ConfigError);
  });
});

describe('docker container naming and addressing', () => {
  it('names containers like travis: travis-job-<owner>-<repo>-<job id>, parts cut to 14, lower case', () => {
    expect(containerName({ jobId: 42, repository: 'octo/repo' })).toBe('travis-job-octo-repo-42');
    expect(containerName({ jobId: 7, repository: 'Some_Org/a.very.long.repository.name' })).toBe('travis-job-some-org-a-very-long-re-7');
    expect(containerName({ jobId: 1, repository: 'x--/--y' })).toBe('travis-job-x-y-1');
  });

  const info = (settings: ContainerInfo['NetworkSettings']): ContainerInfo => ({
    Id: 'abc',
    Name: '/c',
    State: { Status: 'running', Running: true, ExitCode: 0 },
    NetworkSettings: settings,
  });

  it('dials the address on the configured network, else the default one, else any', () => {
    const networks = { Networks: { bridge: { IPAddress: '172.17.0.2' }, ci: { IPAddress: '10.1.0.9' } }, IPAddress: '172.17.0.2' };
    expect(containerAddress(info(networks), 'ci')).toBe('10.1.0.9');
    expect(containerAddress(info(networks), 'other')).toBeUndefined();
    expect(containerAddress(info(networks), '')).toBe('172.17.0.2');
    expect(containerAddress(info({ IPAddress: '', Networks: { ci: { IPAddress: '10.1.0.9' } } }), '')).toBe('10.1.0.9');
    expect(containerAddress(info({ IPAddress: '', Networks: { none: { IPAddress: '' } } }), '')).toBeUndefined();
  });
});

describe('docker image selection by tag', () => {
  const images = [
    { Id: 'sha256:ruby', RepoTags: ['travis:ruby'] },
    { Id: 'sha256:go', RepoTags: ['go:latest'] },
    { Id: 'sha256:default', RepoTags: ['default:latest', 'travis:default'] },
    { Id: 'sha256:none', RepoTags: null },
  ];

  it('tries travis:<language>, <language>, travis:default, default, in that order', () => {
    expect(candidateTags('ruby')).toEqual(['travis:ruby', 'ruby', 'travis:default', 'default']);
    expect(findByTag(candidateTags('ruby'), images)).toEqual({ ref: 'sha256:ruby', name: 'travis:ruby' });
    // A bare name is the `latest` tag, as docker reads it.
    expect(findByTag(candidateTags('go'), images)).toEqual({ ref: 'sha256:go', name: 'go' });
    expect(findByTag(candidateTags('haskell'), images)).toEqual({ ref: 'sha256:default', name: 'travis:default' });
    expect(findByTag(candidateTags('haskell'), images.slice(0, 2))).toBeUndefined();
  });

  it('lets only image references into a URL path', () => {
    for (const good of ['travis:default', 'registry.local:5000/team/image:1.2', 'ubuntu@sha256:abc123', 'sha256:abc']) {
      expect(isValidImageName(good)).toBe(true);
    }
    for (const bad of ['', '../../containers/x', 'a/../b', 'img?x=1', 'img#x', ' img', 'a b']) {
      expect(isValidImageName(bad)).toBe(false);
    }
  });

  it('splits repository and tag for a pull, keeping a registry port and a digest', () => {
    expect(splitImageName('ubuntu')).toEqual(['ubuntu', 'latest']);
    expect(splitImageName('travisci/ci-garnet:packer-1')).toEqual(['travisci/ci-garnet', 'packer-1']);
    expect(splitImageName('registry:5000/team/img')).toEqual(['registry:5000/team/img', 'latest']);
    expect(splitImageName('img@sha256:abc')).toEqual(['img@sha256:abc', '']);
  });

  it('reports each new pull status once, and fails on an error line', async () => {
    const lines = [
      { status: 'Pulling from library/ubuntu', id: 'latest' },
      { status: 'Downloading', id: 'a1', progressDetail: { current: 1 } },
      { status: 'Downloading', id: 'a1', progressDetail: { current: 2 } },
      { status: 'Pull complete', id: 'a1' },
      { status: 'Status: Downloaded newer image for ubuntu:latest' },
    ];
    const text = lines.map((line) => JSON.stringify(line)).join('\r\n') + '\r\n';
    const progress: string[] = [];
    // Chunks that cut lines in the middle.
    await readPullStream(Readable.from([text.slice(0, 30), text.slice(30, 95), text.slice(95)]), 'ubuntu', (line) => progress.push(line));
    expect(progress).toEqual(['latest: Pulling from library/ubuntu', 'a1: Downloading', 'a1: Pull complete', 'Status: Downloaded newer image for ubuntu:latest']);
    const failing = `${JSON.stringify({ status: 'Pulling' })}\n${JSON.stringify({ errorDetail: { message: 'manifest unknown' }, error: 'manifest unknown' })}\n`;
    await expect(readPullStream(Readable.from([failing]), 'nope:1', () => {})).rejects.toThrow(/pulling nope:1: manifest unknown/);
  });
});

describe('cpuset pool', () => {
  it('hands out the lowest free cores, never the same core twice, and takes them back', () => {
    const pool = new CpuSetPool(4);
    expect(pool.checkout(2)).toBe('0,1');
    expect(pool.checkout(1)).toBe('2');
    expect(pool.checkout(2)).toBeUndefined();
    expect(pool.free).toBe(1);
    pool.checkin('0,1');
    expect(pool.checkout(3)).toBe('0,1,3');
    pool.checkin('2');
    pool.checkin('2');
    expect(pool.free).toBe(1);
    expect(pool.checkout(1)).toBe('2');
    expect(pool.checkout(1)).toBeUndefined();
  });
});
