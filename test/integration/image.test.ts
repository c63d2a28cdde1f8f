/**
 * mayfly's container image, as scripts/build-image.sh builds it from the
 * Dockerfile, run on the test Docker engine the way an operator runs it:
 * the file queue in a mounted directory, the local backend. One container
 * for the file, taken through its life in order: it starts as the
 * unprivileged user, its HEALTHCHECK turns healthy, it runs a job, and
 * `docker stop` drains (a running job finishes) and exits 0.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { chmod, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { STAGES } from '../../src/queue/file/layout.js';
import { MAYFLY_IMAGE, TEST_DOCKER_SOCKET, describeWithDocker, dockerCli, dockerUnavailable } from '../helpers/docker.js';
import { fileAppears } from '../helpers/files.js';

/** The uid of the image's `mayfly` user (the Dockerfile's useradd). */
const MAYFLY_UID = '10001';
/** Where the container sees the queue's base directory. */
const QUEUE_MOUNT = '/queue';
/** Longer than any drain here: the job running at the stop is let go right after the drain begins. */
const STOP_TIMEOUT_S = 300;

const unavailable = await dockerUnavailable(MAYFLY_IMAGE, 'scripts/build-image.sh');

/**
 * The first line of a docker command's output that `matches`, read as it
 * streams (`docker events`, `docker logs --follow`); the command is then stopped.
 */
async function firstLine(args: string[], matches: (line: string) => boolean): Promise<string> {
  const child = spawn('docker', ['-H', `unix://${TEST_DOCKER_SOCKET}`, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    for await (const line of createInterface({ input: child.stdout })) if (matches(line)) return line;
    throw new Error(`docker ${args.join(' ')} ended without the line looked for`);
  } finally {
    child.kill();
    if (child.exitCode === null && child.signalCode === null) await once(child, 'exit');
  }
}

describeWithDocker('the container image (real engine)', unavailable, () => {
  let base: string;
  let container: string;
  let startedAt: string;

  const queueDir = (stage: keyof typeof STAGES): string => join(base, 'builds', STAGES[stage]);
  const stateOf = (id: number): string => readFileSync(join(queueDir('finished'), `${id}.state`), 'utf8');

  /** Put a job in the queue as a careful writer does: written aside, then renamed in. */
  async function enqueue(id: number, script: string): Promise<void> {
    const payload = {
      type: 'test',
      job: { id, number: `${id}.1`, queued_at: new Date().toISOString() },
      repository: { id: 1, slug: 'octo/image' },
      config: { language: 'shell', script },
      timeouts: {},
    };
    const aside = join(base, `${id}.json.tmp`);
    await writeFile(aside, JSON.stringify(payload));
    await rename(aside, join(queueDir('created'), `${id}.json`));
  }

  beforeAll(async () => {
    base = await mkdtemp(join(tmpdir(), 'mayfly-image-'));
    // The worker in the container is not root: it must be able to make the queue's directories here.
    await chmod(base, 0o777);
    container = (
      await dockerCli([
        'run',
        '--detach',
        '--name',
        `mayfly-image-test-${randomBytes(4).toString('hex')}`,
        // The file queue and the local backend need no network; the health check probes loopback.
        '--network',
        'none',
        // The image checks every 30 s; the same check, sooner, so the test does not wait 30 s for the first.
        '--health-interval',
        '1s',
        '--volume',
        `${base}:${QUEUE_MOUNT}`,
        '--env',
        'TRAVIS_WORKER_QUEUE_TYPE=file',
        '--env',
        `TRAVIS_WORKER_BASE_DIR=${QUEUE_MOUNT}`,
        '--env',
        'TRAVIS_WORKER_PROVIDER_NAME=local',
        '--env',
        'TRAVIS_WORKER_HOSTNAME=image-test',
        MAYFLY_IMAGE,
      ])
    ).trim();
    startedAt = (await dockerCli(['inspect', '--format', '{{.State.StartedAt}}', container])).trim();
  }, 120_000);

  afterAll(async () => {
    if (container !== undefined) await dockerCli(['rm', '--force', container]);
    await rm(base, { recursive: true, force: true });
  });

  it('runs every process as the unprivileged mayfly user', async () => {
    expect((await dockerCli(['inspect', '--format', '{{.Config.User}}', container])).trim()).toBe('mayfly');
    const [, ...processes] = (await dockerCli(['top', container, '-o', 'pid,uid,args'])).trim().split('\n');
    // tini, and mayfly under it: [uid, command line].
    expect(processes.map((line) => /^\s*\d+\s+(\d+)\s+(.*)$/.exec(line)?.slice(1))).toEqual([
      [MAYFLY_UID, '/usr/bin/tini -- mayfly'],
      [MAYFLY_UID, 'node /usr/local/bin/mayfly'],
    ]);
  });

  it("turns healthy by the image's own HEALTHCHECK", async () => {
    // --since replays what happened before this command started: a status reported already is not missed.
    await firstLine(['events', '--since', startedAt, '--filter', `container=${container}`, '--filter', 'event=health_status'], (line) =>
      line.includes('health_status: healthy'),
    );
    const health = JSON.parse(await dockerCli(['inspect', '--format', '{{json .State.Health}}', container])) as {
      Status: string;
      Log: { ExitCode: number; End: string }[];
    };
    expect(health.Status).toBe('healthy');
    const firstHealthy = health.Log.find((check) => check.ExitCode === 0);
    expect(firstHealthy).toBeDefined();
    // For the record (docs/operations.md), not asserted: from the container's start to its first passing check.
    const seconds = (Date.parse(firstHealthy?.End ?? '') - Date.parse(startedAt)) / 1000;
    const size = Number(await dockerCli(['image', 'inspect', '--format', '{{.Size}}', MAYFLY_IMAGE]));
    console.info(`image ${MAYFLY_IMAGE}: ${Math.round(size / 1e6)} MB; start to healthy (checks every 1 s): ${seconds.toFixed(1)} s`);
  }, 60_000);

  it('runs a job from the mounted file queue with the local backend', async () => {
    await fileAppears(queueDir('created'));
    await enqueue(1, 'echo "hello from $(id -un)"');
    await fileAppears(join(queueDir('finished'), '1.state'));
    expect(stateOf(1)).toBe('passed');
    expect(readFileSync(join(base, 'builds', 'log', '1.log'), 'utf8')).toContain('hello from mayfly');
  });

  it('drains at docker stop: the running job finishes, then the worker exits 0, its log JSON lines', async () => {
    const running = join(base, 'job-2.running');
    const go = join(base, 'job-2.go');
    await enqueue(2, `touch ${QUEUE_MOUNT}/job-2.running; while [ ! -e ${QUEUE_MOUNT}/job-2.go ]; do sleep 0.1; done; echo let go`);
    await fileAppears(running);

    const draining = firstLine(['logs', '--follow', container], (line) => line.includes('SIGTERM received: draining'));
    const stopped = dockerCli(['stop', '--time', String(STOP_TIMEOUT_S), container], AbortSignal.timeout((STOP_TIMEOUT_S + 60) * 1000));
    await draining;
    await writeFile(go, '');
    await stopped;

    const state = JSON.parse(await dockerCli(['inspect', '--format', '{{json .State}}', container])) as { Status: string; ExitCode: number };
    expect([state.Status, state.ExitCode]).toEqual(['exited', 0]);
    expect(stateOf(2)).toBe('passed');
    // Not a terminal: the worker log stays JSON, one object a line, for whatever collects it.
    const lines = (await dockerCli(['logs', container])).trim().split('\n');
    const entries = lines.map((line) => JSON.parse(line) as { level: unknown; msg: unknown });
    expect(entries.filter((entry) => typeof entry.level !== 'string' || typeof entry.msg !== 'string')).toEqual([]);
  }, 120_000);
});
