/**
 * The instance is asked for while the build script is made (run-job.ts):
 * a whole worker on the real broker, a build API on loopback whose answers
 * the test holds and chooses, and a backend whose starts the test holds,
 * fails or lets through, recording what happened to each instance.
 */
import { EventEmitter, once } from 'node:events';
import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { backends } from '../../backends/index.js';
import { InstanceStartError, raceAbort, type Backend, type BackendDefinition, type Instance, type StartOptions } from '../../src/backend/kit.js';
import { loadConfig } from '../../src/config/load.js';
import { silentLogger } from '../../src/logger.js';
import { startWorker, type StartWorkerOptions } from '../../src/main.js';
import type { JobDone, Worker } from '../../src/worker.js';
import { nextJobDone } from '../helpers/worker.js';
import { createVhost, drain, messageCount, publishRaw, purge, type DrainedMessage, type TestVhost } from '../helpers/rabbitmq.js';

const QUEUE = 'builds.overlap';

/** What a start should do once called: wait for the test (`release` or `fail`), or resolve at once. */
type StartPlan = 'hold' | 'ready';

/** A backend whose starts the test steers; `events` says what happened, in order. */
class ProbeBackend implements Backend {
  readonly events = new EventEmitter();
  readonly log: string[] = [];
  plan: StartPlan = 'ready';
  /** Set: an aborted start winds down (as a cloud deleting a half-made VM) only once this resolves. */
  windDown: Promise<void> | undefined;
  #settle: ((error?: Error) => void) | undefined;

  async start(attributes: { jobId: number }, options: StartOptions): Promise<Instance> {
    this.#record('start');
    if (this.plan === 'hold') {
      const held = new Promise<void>((resolve, reject) => {
        this.#settle = (error) => (error ? reject(error) : resolve());
      });
      try {
        await raceAbort(held, options.signal);
      } catch (err) {
        if (options.signal.aborted) await this.windDown;
        this.#record(options.signal.aborted ? 'start aborted' : 'start failed');
        throw err;
      }
    }
    const id = `probe-${attributes.jobId}`;
    this.#record('instance');
    return {
      id,
      imageName: 'probe-image',
      startupMs: 0,
      upload: async () => this.#record('upload'),
      run: async () => ({ exitCode: 0 }),
      destroy: async () => this.#record('destroyed'),
    };
  }

  /** Make a held start fail as a cloud refusing the instance would. */
  fail(): void {
    this.#settle?.(new InstanceStartError('the probe backend fails this start'));
  }

  async close(): Promise<void> {}

  #record(event: string): void {
    this.log.push(event);
    this.events.emit(event);
  }
}

const probe = new ProbeBackend();
const probeDefinition: BackendDefinition = {
  name: 'probe',
  description: 'a backend the overlap test steers',
  settings: {},
  create: () => probe,
};

/** A build API whose answers the test gives by hand: `requested` fires per request, `answer` replies to the pending one. */
class HeldBuildApi {
  readonly events = new EventEmitter();
  #pending: ServerResponse | undefined;
  readonly server: Server = createServer((request, response) => {
    request.resume();
    request.on('end', () => {
      this.#pending = response;
      response.on('close', () => {
        if (!response.writableEnded) this.events.emit('abandoned');
      });
      this.events.emit('requested');
    });
  });

  get uri(): string {
    return `http://token@127.0.0.1:${(this.server.address() as AddressInfo).port}/script`;
  }

  answer(status: number, body: string): void {
    this.#pending?.writeHead(status).end(body);
    this.#pending = undefined;
  }
}

const buildApi = new HeldBuildApi();
let vhost: TestVhost;
let worker: Worker | undefined;

beforeAll(async () => {
  vhost = await createVhost();
  buildApi.server.listen(0, '127.0.0.1');
  await once(buildApi.server, 'listening');
});

afterAll(async () => {
  buildApi.server.closeAllConnections();
  buildApi.server.close();
  await vhost?.delete();
});

afterEach(async () => {
  await worker?.stop();
  worker = undefined;
  probe.log.length = 0;
  probe.windDown = undefined;
  await purge(vhost.uri, QUEUE, 'reporting.jobs.builds', 'reporting.jobs.logs');
});

const withinTest = (): AbortSignal => AbortSignal.timeout(20_000);

async function start(env: Record<string, string> = {}, options: StartWorkerOptions = {}): Promise<Worker> {
  const all = [...backends, probeDefinition];
  const config = loadConfig(all, {
    TRAVIS_WORKER_QUEUE_TYPE: 'amqp',
    TRAVIS_WORKER_AMQP_URI: vhost.uri,
    TRAVIS_WORKER_QUEUE_NAME: QUEUE,
    TRAVIS_WORKER_PROVIDER_NAME: 'probe',
    TRAVIS_WORKER_BUILD_API_URI: buildApi.uri,
    TRAVIS_WORKER_INITIAL_SLEEP: '0s',
    TRAVIS_WORKER_HOSTNAME: 'overlap-worker',
    TRAVIS_WORKER_BREAKER_THRESHOLD: '0',
    ...env,
  });
  worker = await startWorker(config, all, silentLogger, options);
  return worker;
}


async function publishJob(id: number): Promise<void> {
  const payload = {
    type: 'test',
    vm_type: 'default',
    queue: QUEUE,
    uuid: `uuid-${id}`,
    config: { language: 'ruby', os: 'linux', dist: 'trusty' },
    job: { id, number: '1.1', queued_at: '2018-05-14T14:26:50Z' },
    source: { id: 1, number: '1' },
    repository: { id: 1, slug: 'octo/overlap' },
    timeouts: { hard_limit: 3000 },
  };
  await publishRaw(vhost.uri, '', QUEUE, JSON.stringify(payload));
}

/**
 * Publish job `id` and resolve once the build API holds its script request
 * and the backend has reported `backendEvent` for it; the job's end is returned.
 */
async function publishUntil(w: Worker, id: number, backendEvent: 'start' | 'instance'): Promise<{ done: Promise<JobDone> }> {
  const done = nextJobDone(w, id);
  const requested = once(buildApi.events, 'requested', { signal: withinTest() });
  const reported = once(probe.events, backendEvent, { signal: withinTest() });
  await publishJob(id);
  await Promise.all([requested, reported]);
  // In an object: an async function returning the promise itself would wait for it.
  return { done };
}

const statesOf = (messages: DrainedMessage[]): string[] => messages.map((m) => (m.body as { state: string }).state);

async function everything(queue: string): Promise<DrainedMessage[]> {
  return drain(vhost.uri, queue, await messageCount(vhost.uri, queue), withinTest());
}

/** The text of every log part published so far. */
async function jobLog(): Promise<string> {
  return (await everything('reporting.jobs.logs')).map((m) => (m.body as { log: string }).log).join('');
}

describe('the instance starts while the build script is made', () => {
  it('asks the backend for the instance before the build API has answered, and reports the states in order', async () => {
    const w = await start({ TRAVIS_WORKER_PROGRESS_TYPE: 'text' });
    probe.plan = 'ready';
    const { done } = await publishUntil(w, 1, 'instance');
    buildApi.answer(200, 'echo hi');
    expect((await done).result).toEqual({ outcome: 'finished', state: 'passed' });
    expect(probe.log).toEqual(['start', 'instance', 'upload', 'destroyed']);
    expect(statesOf(await everything('reporting.jobs.builds'))).toEqual(['received', 'started', 'passed']);
    // The start's fold comes before the worker information, as when the start followed the script.
    const log = await jobLog();
    expect(log.indexOf('travis_fold:end:step_start_instance')).toBeGreaterThanOrEqual(0);
    expect(log.indexOf('travis_fold:end:step_start_instance')).toBeLessThan(log.indexOf('travis_fold:start:worker_info'));
  });

  it('destroys an instance that started at once when the build API refuses the script (4xx), ending the job errored as before', async () => {
    const w = await start({ TRAVIS_WORKER_PROGRESS_TYPE: 'text' });
    probe.plan = 'ready';
    const { done } = await publishUntil(w, 2, 'instance');
    buildApi.answer(403, 'no such job');
    expect((await done).result).toEqual({ outcome: 'finished', state: 'errored' });
    expect(probe.log).toEqual(['start', 'instance', 'destroyed']);
    expect(statesOf(await everything('reporting.jobs.builds'))).toEqual(['received', 'errored']);
    // Only what a job whose script failed always logged: no start fold.
    const log = await jobLog();
    expect(log).toContain('The build script could not be generated (HTTP 403).');
    expect(log).not.toContain('step_start_instance');
  });

  it('aborts a start still under way when the build API refuses the script', async () => {
    const w = await start();
    probe.plan = 'hold';
    const { done } = await publishUntil(w, 3, 'start');
    buildApi.answer(404, 'gone');
    expect((await done).result).toEqual({ outcome: 'finished', state: 'errored' });
    expect(probe.log).toEqual(['start', 'start aborted']);
    expect(statesOf(await everything('reporting.jobs.builds'))).toEqual(['received', 'errored']);
  });

  it('requeues a job whose instance fails to start while its script is fetched, abandoning the script request', async () => {
    const w = await start();
    probe.plan = 'hold';
    const { done } = await publishUntil(w, 4, 'start');
    const abandoned = once(buildApi.events, 'abandoned', { signal: withinTest() });
    probe.fail();
    // The build API never answers: only the failed start can end the job, and it drops the script request.
    expect((await done).result).toEqual({ outcome: 'requeued', cause: 'E_INSTANCE_START', instanceReady: false });
    await abandoned;
    expect(probe.log).toEqual(['start', 'start failed']);
    expect(statesOf(await everything('reporting.jobs.builds'))).toEqual(['received', 'reset']);
  });

  it('keeps the old order with sequentialStart (the bench\'s baseline): the instance is asked for once the script is in', async () => {
    const w = await start({}, { sequentialStart: true });
    probe.plan = 'ready';
    const done = nextJobDone(w, 5);
    const requested = once(buildApi.events, 'requested', { signal: withinTest() });
    await publishJob(5);
    await requested;
    probe.log.push('script answered');
    buildApi.answer(200, 'echo hi');
    expect((await done).result).toEqual({ outcome: 'finished', state: 'passed' });
    expect(probe.log).toEqual(['script answered', 'start', 'instance', 'upload', 'destroyed']);
    expect(statesOf(await everything('reporting.jobs.builds'))).toEqual(['received', 'started', 'passed']);
  });

  it('reports a refused script at once, while the start it stopped is still winding down', async () => {
    const w = await start();
    probe.plan = 'hold';
    let finishWindDown!: () => void;
    probe.windDown = new Promise((resolve) => (finishWindDown = resolve));
    const { done } = await publishUntil(w, 6, 'start');
    buildApi.answer(404, 'gone');
    // Both states are out before the start has let go of what it made.
    const states = await drain(vhost.uri, 'reporting.jobs.builds', 2, withinTest());
    expect(statesOf(states)).toEqual(['received', 'errored']);
    expect(probe.log).toEqual(['start']);
    finishWindDown();
    expect((await done).result).toEqual({ outcome: 'finished', state: 'errored' });
    expect(probe.log).toEqual(['start', 'start aborted']);
  });
});
