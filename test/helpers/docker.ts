/**
 * The Docker engine the docker backend's tests run against: the one
 * scripts/test-prerequisites.sh starts (own socket, own data root, a
 * user-defined bridge network the host reaches, the job image
 * `travis:default` with sshd and a `travis` user). The container image's
 * test runs mayfly's own image there (scripts/build-image.sh builds it).
 * When the engine or an image is missing, the tests fail, saying so.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { describe, it } from 'vitest';
import { DockerApi } from '../../backends/docker/api.js';
import { LABELS } from '../../backends/docker/backend.js';
import { DockerEngine } from '../../backends/docker/engine.js';
import type { DockerSettings } from '../../backends/docker/settings.js';
import { silentLogger } from '../../src/logger.js';

/** Kept in step with scripts/test-engine.sh. */
export const TEST_DOCKER_SOCKET = process.env.MAYFLY_TEST_DOCKER_SOCKET ?? '/run/mayfly-test-docker.sock';
export const TEST_DOCKER_NETWORK = 'mayfly-test';
export const TEST_IMAGE = 'travis:default';
/** mayfly's container image, as scripts/build-image.sh tags it. */
export const MAYFLY_IMAGE = 'mayfly:test';

/** A client of the test engine for the tests' own look at it (labels, kill); close it after use. */
export function testEngine(): DockerEngine {
  return new DockerEngine(
    new DockerApi({
      address: { kind: 'unix', socketPath: TEST_DOCKER_SOCKET, label: `unix://${TEST_DOCKER_SOCKET}` },
      certPath: '',
      tlsVerify: true,
      apiVersion: '',
      metrics: { apiCall: () => {} },
      logger: silentLogger,
    }),
  );
}

/** Why the test engine can't be used, or undefined when it can: it must answer and hold `image` (which `madeBy` makes). */
export async function dockerUnavailable(image = TEST_IMAGE, madeBy = 'scripts/test-prerequisites.sh'): Promise<string | undefined> {
  const engine = testEngine();
  try {
    const signal = AbortSignal.timeout(10_000);
    if ((await engine.imageId(image, signal)) === undefined) return `the engine has no ${image} image: ${madeBy} makes it`;
    return undefined;
  } catch (err) {
    return (err as Error).message;
  } finally {
    await engine.api.close();
  }
}

/**
 * `describe`, when the test engine is up. Otherwise one failing test that
 * says why and how to start it: a missing engine or image fails, in CI and
 * out of it (`npm test` starts the engine first, so it is only missing when
 * that failed).
 */
export function describeWithDocker(name: string, unavailable: string | undefined, body: () => void): void {
  if (unavailable === undefined) {
    describe(name, body);
    return;
  }
  const message = `no test Docker engine at ${TEST_DOCKER_SOCKET} (${unavailable}); scripts/test-prerequisites.sh starts one (as root)`;
  describe(name, () => {
    it('needs the test Docker engine', () => {
      throw new Error(message);
    });
  });
}

/** A worker host name of its own per test file: containers are found by it, and never confused with another file's. */
export function testWorkerName(): string {
  return `test-docker-${randomBytes(4).toString('hex')}`;
}

/** Settings for the test engine, as an operator would write them, with what a test is about overridden. */
export function testDockerSettings(overrides: Partial<DockerSettings> = {}): DockerSettings {
  return {
    endpoint: `unix://${TEST_DOCKER_SOCKET}`,
    host: '',
    certPath: '',
    tlsVerify: true,
    apiVersion: '',
    cmd: '/sbin/init',
    execCmd: 'bash /home/travis/build.sh',
    inspectInterval: 100,
    tmpfsMap: '/run:rw,nosuid,nodev,exec,noatime,size=65536k',
    binds: '',
    memory: '512MiB',
    shm: '64MiB',
    // One core per job on a two-core machine: two jobs at once, the third finds no room.
    cpus: 1,
    cpuSetSize: 2,
    native: false,
    nativeTty: true,
    privileged: false,
    securityOpt: '',
    containerLabels: '',
    imageSelectorType: 'tag',
    pull: false,
    network: TEST_DOCKER_NETWORK,
    // The test image's init is sshd, which stops at SIGTERM at once (a stop in its first milliseconds waits this long).
    stopTimeout: 2_000,
    sshDialTimeout: 5_000,
    httpProxy: '',
    httpsProxy: '',
    ftpProxy: '',
    noProxy: '',
    images: {},
    ...overrides,
  };
}

/** Ids of the containers (running or not) a worker named `worker` made. */
export async function containersOf(engine: DockerEngine, worker: string): Promise<string[]> {
  const found = await engine.listContainers([`${LABELS.worker}=${worker}`], AbortSignal.timeout(10_000));
  return found.map((container) => container.Id);
}

/** Remove whatever a worker named `worker` left (after the assertion that there is nothing). */
export async function removeContainersOf(engine: DockerEngine, worker: string): Promise<void> {
  for (const id of await containersOf(engine, worker)) await engine.removeContainer(id, AbortSignal.timeout(30_000));
}

/** The docker command line, against the test engine; rejects with its stderr when it fails. */
export async function dockerCli(args: string[], signal: AbortSignal = AbortSignal.timeout(120_000)): Promise<string> {
  const { stdout } = await promisify(execFile)('docker', ['-H', `unix://${TEST_DOCKER_SOCKET}`, ...args], { signal, encoding: 'utf8' });
  return stdout;
}
