/**
 * The ec2 backend through the real AWS SDK against the fake EC2 (Query API,
 * XML), whose instances are real sshd processes on their own 127.x address:
 * the whole worker on RabbitMQ, then the backend alone for each failure the
 * backend must survive (docs/failure-modes.md). After every test the fake's record shows no instance left.
 */
import { once } from 'node:events';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { homedir, tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import ssh2 from 'ssh2';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { definition, type Ec2Settings } from '../../backends/ec2/index.js';
import { LEASE_MARGIN_MS } from '../../backends/ec2/tags.js';
import type { Backend, BootPhase, Instance, StartAttributes, StartOptions } from '../../src/backend/contract.js';
import { ConnectionLostError, JobRefusedError, NoCapacityError, errorMessage } from '../../src/errors.js';
import { silentLogger } from '../../src/logger.js';
import { FakeEc2, type FakeEc2Call, type FakeEc2Instance } from '../fakes/ec2-server.js';
import { ec2Env, ec2Settings, registerDefaultImage } from '../fakes/ec2-settings.js';
import { testAttributes } from '../helpers/attributes.js';
import { testBackendContext, type RecordedApiCall } from '../helpers/backend-context.js';
import { CollectingWritable } from '../helpers/collect.js';
import { drain, messageCount, publishRaw, type DrainedMessage } from '../helpers/rabbitmq.js';
import type { TestWorker } from '../helpers/worker.js';
import { useAmqpWorker } from '../helpers/amqp-worker.js';
import { configErrorOf } from '../helpers/config-error.js';

const never = new AbortController().signal;
let fake: FakeEc2;
const cleanups: (() => Promise<void>)[] = [];

beforeAll(async () => {
  fake = await FakeEc2.start({ bootDelayMs: 50 });
  registerDefaultImage(fake);
});

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  fake.resetFaults();
  fake.bootDelayMs = 50;
  fake.notVisibleMs = 0;
  expect(fake.live().map((instance) => `${instance.instanceId} ${instance.state}`)).toEqual([]);
});

afterAll(async () => {
  await fake?.close();
});

interface Harness {
  backend: Backend;
  apiCalls: RecordedApiCall[];
}

function ec2Backend(env: Record<string, string> = {}): Harness {
  return ec2BackendWith(ec2Settings(fake, env));
}

/** A backend on `settings` as given, even ones the loader would refuse (to show what the cloud does with them). */
function ec2BackendWith(settings: Ec2Settings): Harness {
  const context = testBackendContext();
  const backend = definition.create(settings, context);
  cleanups.push(() => backend.close());
  return { backend, apiCalls: context.apiCalls };
}

interface Boot {
  options: StartOptions;
  progress: string[];
  phases: BootPhase[];
  /** Resolves once a progress line contains `text`. */
  progressed(text: string): Promise<void>;
}

function boot(signal: AbortSignal = never): Boot {
  const progress: string[] = [];
  const phases: BootPhase[] = [];
  const waiters: { text: string; resolve: () => void }[] = [];
  return {
    progress,
    phases,
    options: {
      signal,
      logger: silentLogger,
      progress: (line) => {
        progress.push(line);
        for (const waiter of waiters.filter((w) => line.includes(w.text))) waiter.resolve();
      },
      recordPhase: (phase) => phases.push(phase),
    },
    progressed: (text) =>
      progress.some((line) => line.includes(text)) ? Promise.resolve() : new Promise((resolve) => waiters.push({ text, resolve })),
  };
}

async function started(backend: Backend, attributes: StartAttributes = testAttributes(), run: Boot = boot()): Promise<Instance> {
  const instance = await backend.start(attributes, run.options);
  cleanups.push(() => instance.destroy());
  return instance;
}

/** Settles to what the promise did, for asserting on rejections by their class and fields. */
async function settle<T>(promise: Promise<T>): Promise<{ value: T } | { error: unknown }> {
  return promise.then(
    (value) => ({ value }),
    (error: unknown) => ({ error }),
  );
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  const settled = await settle(promise);
  if ('value' in settled) throw new Error('expected a rejection');
  return settled.error;
}

/** Resolves with the next call of `action` the fake answers (or withholds). */
function nextCall(action: string): Promise<FakeEc2Call> {
  return new Promise((resolve) => {
    const onCall = (call: FakeEc2Call): void => {
      if (call.action !== action) return;
      fake.off('call', onCall);
      resolve(call);
    };
    fake.on('call', onCall);
  });
}

const launchedNow = (): Promise<FakeEc2Instance> => once(fake, 'launched').then(([instance]) => instance as FakeEc2Instance);

describe('ec2 backend on the worker (RabbitMQ -> EC2 -> SSH -> log -> state)', () => {
  const QUEUE = 'builds.ec2';
  const amqp = useAmqpWorker(QUEUE);

  function start(env: Record<string, string> = {}): Promise<TestWorker> {
    return amqp.start({ TRAVIS_WORKER_PROVIDER_NAME: 'ec2', ...ec2Env(fake), ...env });
  }

  function payload(id: number, script: string): string {
    return JSON.stringify({
      type: 'test',
      vm_type: 'default',
      queue: QUEUE,
      uuid: `uuid-${id}`,
      config: { language: 'ruby', script, os: 'linux', group: 'stable', dist: 'xenial' },
      job: { id, number: '1.1', queued_at: '2026-11-22T10:00:00Z' },
      source: { id: 1, number: '1' },
      repository: { id: 2, slug: 'octo/ec2-job' },
      timeouts: { hard_limit: 600, log_silence: null },
    });
  }

  const timeout = (): AbortSignal => AbortSignal.timeout(20_000);
  const statesOf = (messages: DrainedMessage[]): string[] => messages.map((m) => (m.body as { state: string }).state);
  const logOf = (messages: DrainedMessage[]): string => messages.map((m) => (m.body as { log: string }).log).join('');
  const drainAll = async (queue: string): Promise<DrainedMessage[]> =>
    drain(amqp.vhost.uri, queue, await messageCount(amqp.vhost.uri, queue), timeout());
  const instanceOf = (jobId: number): FakeEc2Instance | undefined =>
    fake.instances.find((instance) => instance.tags['travis.job_id'] === String(jobId));

  it('runs a job from the queue on a fresh instance, logs its output (boot progress with PROGRESS_TYPE=text) and reports it passed', async () => {
    const w = await start({ TRAVIS_WORKER_PROGRESS_TYPE: 'text' });
    const jobId = 94001;
    const done = w.jobDone(jobId);
    await publishRaw(amqp.vhost.uri, '', QUEUE, payload(jobId, 'echo "Hello from $(hostname -I 2>/dev/null || echo ec2)"; echo Hello World'));
    expect((await done).result).toEqual({ outcome: 'finished', state: 'passed' });

    const states = await drainAll('reporting.jobs.builds');
    expect(statesOf(states)).toEqual(['received', 'started', 'passed']);
    const instance = instanceOf(jobId);
    expect(instance?.state).toBe('terminated');
    expect((states[1]?.body as { meta: { instance_id: string } }).meta.instance_id).toBe(instance?.instanceId);
    const log = logOf(await drainAll('reporting.jobs.logs'));
    expect(log).toContain('Hello World\r\n');
    expect(log).toMatch(/Starting an EC2 t2\.micro instance from travis-ci-default-xenial-1700000000 \(ami-[0-9a-f]+\) in eu-west-1/);
    expect(log).toContain(`Instance ${instance?.instanceId} created, waiting for it to run`);
    expect(log).toContain(`instance: ${instance?.instanceId} travis-ci-default-xenial-1700000000`);
  });

  it('requeues a job whose instance does not boot within the startup timeout, and terminates the instance', async () => {
    fake.bootDelayMs = 10 * 60_000;
    const w = await start({ TRAVIS_WORKER_STARTUP_TIMEOUT: '1s' });
    const jobId = 94002;
    const done = w.jobDone(jobId);
    await publishRaw(amqp.vhost.uri, '', QUEUE, payload(jobId, 'echo never runs'));
    expect((await done).result).toMatchObject({ outcome: 'requeued' });
    expect(statesOf(await drainAll('reporting.jobs.builds'))).toEqual(['received', 'reset']);
    expect(instanceOf(jobId)?.state).toBe('terminated');
  });

  it('ends a job errored, saying why, when EC2 supports its launch in no zone (EBS optimization of a t2), instead of requeueing it for ever', async () => {
    const w = await start({ TRAVIS_WORKER_EC2_INSTANCE_TYPE: 't2.micro', TRAVIS_WORKER_EC2_EBS_OPTIMIZED: 'true' });
    const jobId = 94004;
    const done = w.jobDone(jobId);
    await publishRaw(amqp.vhost.uri, '', QUEUE, payload(jobId, 'echo never runs'));
    expect((await done).result).toEqual({ outcome: 'finished', state: 'errored' });
    expect(statesOf(await drainAll('reporting.jobs.builds'))).toEqual(['received', 'errored']);
    expect(logOf(await drainAll('reporting.jobs.logs'))).toMatch(
      /EC2 refused to launch the build VM, a t2\.micro instance from ami-[0-9a-f]+: EBS-optimized instances are not supported for your requested configuration\./,
    );
    expect(instanceOf(jobId)).toBeUndefined();
  });

  it('requeues a job whose spot instance is interrupted while the script runs', async () => {
    const w = await start({ TRAVIS_WORKER_EC2_SPOT: 'true' });
    const jobId = 94003;
    const done = w.jobDone(jobId);
    await publishRaw(amqp.vhost.uri, '', QUEUE, payload(jobId, 'echo "script-$((40 + 2))"; sleep 600'));
    const parts: DrainedMessage[] = [];
    const signal = timeout();
    while (!logOf(parts).includes('script-42')) parts.push(...(await drain(amqp.vhost.uri, 'reporting.jobs.logs', 1, signal)));

    const instance = instanceOf(jobId) as FakeEc2Instance;
    expect(instance.spot).toBe(true);
    await fake.interrupt(instance.instanceId);
    expect((await done).result).toEqual({ outcome: 'requeued', cause: 'E_CONNECTION_LOST', instanceReady: true });
    expect(statesOf(await drainAll('reporting.jobs.builds'))).toEqual(['received', 'started', 'reset']);
  });
});

describe('ec2 backend', () => {
  it("launches with KEY_NAME for the image's admin user, as travis does, and still reaches the job as SSH_USER with the job's own key", async () => {
    const { backend } = ec2Backend({ TRAVIS_WORKER_EC2_KEY_NAME: 'ops-admin' });
    const instance = await started(backend);
    expect(fake.instance(instance.id).params['KeyName']).toBe('ops-admin');
    await instance.upload(Buffer.from('echo "reached as $(id -un)"'), { signal: never });
    const output = new CollectingWritable();
    expect(await instance.run({ output, signal: never })).toEqual({ exitCode: 0 });
    expect(output.text).toContain(`reached as ${userInfo().username}`);
  });

  it('launches t2 and t3 instances with unlimited CPU credits, as travis does, and other types without', async () => {
    const { backend } = ec2Backend({ TRAVIS_WORKER_EC2_INSTANCE_TYPE: 't3.medium' });
    const burstable = await started(backend);
    const sized = await started(backend, testAttributes({ vmSize: 'large' }));
    expect(fake.instance(burstable.id).params['CreditSpecification.CpuCredits']).toBe('unlimited');
    expect(fake.instance(sized.id).instanceType).toBe('m6i.xlarge');
    expect(fake.instance(sized.id).params['CreditSpecification.CpuCredits']).toBeUndefined();
  });

  it('runs the uploaded script with EXEC_CMD, as travis does', async () => {
    const { backend } = ec2Backend({ TRAVIS_WORKER_EC2_EXEC_CMD: 'env MAYFLY_RUN_BY=exec-cmd bash ~/build.sh' });
    const instance = await started(backend);
    expect(fake.instance(instance.id).params['KeyName']).toBeUndefined();
    await instance.upload(Buffer.from('echo "run by $MAYFLY_RUN_BY"'), { signal: never });
    const output = new CollectingWritable();
    expect(await instance.run({ output, signal: never })).toEqual({ exitCode: 0 });
    expect(output.text).toContain('run by exec-cmd');
  });

  it('boots, reports its progress and phases, and runs a script as the SSH user', async () => {
    const { backend } = ec2Backend();
    const run = boot();
    const instance = await started(backend, testAttributes(), run);
    expect(instance.id).toMatch(/^i-[0-9a-f]{17}$/);
    expect(instance.imageName).toBe('travis-ci-default-xenial-1700000000');
    expect(run.progress[0]).toMatch(/^Starting an EC2 t2\.micro instance/);
    expect(run.progress.at(-1)).toMatch(new RegExp(`^Instance ${instance.id} is running at 127\\.[0-9.]+ \\(`));
    expect(run.phases).toEqual(['create', 'running', 'ip']);

    await instance.upload(Buffer.from('echo "running as $(id -un)"'), { signal: never });
    expect(run.phases).toEqual(['create', 'running', 'ip', 'ssh-ready', 'upload']);
    const output = new CollectingWritable();
    expect(await instance.run({ output, signal: never })).toEqual({ exitCode: 0 });
    expect(output.text).toMatch(/running as \w+/);
    await instance.destroy();
    expect(fake.instance(instance.id).state).toBe('terminated');
  });

  it('notices a running instance soon after it runs, not a whole BOOT_POLL_SLEEP later', async () => {
    // Ten minutes between checks: only the short first pauses let this boot end within the test.
    const { backend } = ec2Backend({ TRAVIS_WORKER_EC2_BOOT_POLL_SLEEP: '10m' });
    const run = boot(AbortSignal.timeout(20_000));
    const instance = await started(backend, testAttributes(), run);
    expect(fake.instance(instance.id).state).toBe('running');
  });

  it('backs off and retries throttled and failed calls, reusing the client token so only one instance is launched', async () => {
    const { backend, apiCalls } = ec2Backend();
    const before = fake.instances.length;
    const callsBefore = fake.callsOf('RunInstances').length;
    fake.failNext('RunInstances', 2, 'throttle');
    fake.failNext('DescribeInstances', 1, 'server-error');
    fake.failNext('DescribeImages', 1, 'unavailable');
    const instance = await started(backend);

    expect(apiCalls.filter((call) => call.operation === 'RunInstances').map((call) => call.outcome)).toEqual(['throttled', 'throttled', 'ok']);
    expect(apiCalls.filter((call) => call.operation === 'DescribeImages').map((call) => call.outcome)).toEqual(['error', 'ok']);
    expect(apiCalls.find((call) => call.operation === 'DescribeInstances')?.outcome).toBe('error');
    const runs = fake.callsOf('RunInstances').slice(callsBefore);
    expect(runs.map((call) => call.errorCode)).toEqual(['RequestLimitExceeded', 'RequestLimitExceeded', undefined]);
    expect(new Set(runs.map((call) => call.params.ClientToken)).size).toBe(1);
    expect(fake.instances.length).toBe(before + 1);
    await instance.destroy();
  });

  it.each([
    ['capacity', 'InsufficientInstanceCapacity', /no capacity/],
    ['unsupported', 'Unsupported', /no capacity/],
    ['quota', 'InstanceLimitExceeded', /quota/],
    ['vcpu-quota', 'VcpuLimitExceeded', /quota/],
  ] as const)('requeues on %s (%s) without retrying, leaving nothing', async (fault, code, says) => {
    const { backend } = ec2Backend();
    const before = fake.instances.length;
    const callsBefore = fake.callsOf('RunInstances').length;
    fake.failNext('RunInstances', 1, fault);
    const error = await rejection(backend.start(testAttributes(), boot().options));
    expect(error).toBeInstanceOf(NoCapacityError);
    expect((error as NoCapacityError).requeue).toBe(true);
    expect((error as Error).message).toMatch(says);
    expect((error as Error).message).toContain(code);
    expect(fake.callsOf('RunInstances').length).toBe(callsBefore + 1);
    expect(fake.instances.length).toBe(before);
  });

  it('refuses the job, without a requeue, when EC2 finds the configuration Unsupported anywhere (EBS optimization of a t2)', async () => {
    const { backend } = ec2Backend({ TRAVIS_WORKER_EC2_INSTANCE_TYPE: 't2.micro', TRAVIS_WORKER_EC2_EBS_OPTIMIZED: 'true' });
    const callsBefore = fake.callsOf('RunInstances').length;
    const error = await rejection(backend.start(testAttributes(), boot().options));
    expect(error).toBeInstanceOf(JobRefusedError);
    expect((error as JobRefusedError).requeue).toBe(false);
    expect((error as JobRefusedError).userMessage).toMatch(/^EC2 refused to launch the build VM, a t2\.micro instance from ami-[0-9a-f]+: EBS-optimized instances are not supported/);
    // One call: no retry could mend it.
    expect(fake.callsOf('RunInstances').slice(callsBefore).map((call) => call.errorCode)).toEqual(['Unsupported']);
  });

  /** Start on an instance that never boots, and cancel the start once RunInstances has answered. */
  async function cancelledWhileBooting(): Promise<{ instance: FakeEc2Instance; stateAtCancel: string; result: { value: Instance } | { error: unknown } }> {
    fake.bootDelayMs = 10 * 60_000;
    const { backend } = ec2Backend();
    const cancel = new AbortController();
    const run = boot(cancel.signal);
    const starting = settle(backend.start(testAttributes(), run.options));
    await run.progressed('waiting for it to run');
    const instance = fake.instances.at(-1) as FakeEc2Instance;
    const stateAtCancel = instance.state;
    cancel.abort(new Error('cancelled by the test'));
    return { instance, stateAtCancel, result: await starting };
  }

  it('terminates the instance when the start is cancelled while it boots', async () => {
    const { instance, stateAtCancel, result } = await cancelledWhileBooting();
    expect(stateAtCancel).toBe('pending');
    expect('error' in result && (result.error as Error).message).toBe('cancelled by the test');
    expect(instance.state).toBe('terminated');
  });

  it('keeps terminating an instance EC2 does not show yet when the start is cancelled right after the launch', async () => {
    fake.notVisibleMs = 500;
    const { instance, result } = await cancelledWhileBooting();
    expect('error' in result).toBe(true);
    const terminations = fake.callsOf('TerminateInstances').filter((call) => call.params['InstanceId.1'] === instance.instanceId);
    expect(terminations[0]?.errorCode).toBe('InvalidInstanceID.NotFound');
    expect(terminations.at(-1)?.errorCode).toBeUndefined();
    expect(instance.state).toBe('terminated');
  });

  /** Start with RunInstances' answer withheld, and cancel the start once the instance is launched. */
  async function cancelledWhileLaunching(): Promise<{ instance: FakeEc2Instance; result: { value: Instance } | { error: unknown } }> {
    const { backend } = ec2Backend();
    fake.withholdRunInstances = true;
    const cancel = new AbortController();
    const launched = launchedNow();
    const starting = settle(backend.start(testAttributes(), boot(cancel.signal).options));
    const instance = await launched;
    // A replay of the launch gets its answer.
    fake.withholdRunInstances = false;
    cancel.abort(new Error('cancelled while launching'));
    return { instance, result: await starting };
  }

  it('terminates a replayed lost launch that EC2 does not show yet', async () => {
    fake.notVisibleMs = 1_000;
    const { instance, result } = await cancelledWhileLaunching();
    expect('error' in result).toBe(true);
    expect(fake.callsOf('TerminateInstances').some((call) => call.errorCode === 'InvalidInstanceID.NotFound')).toBe(true);
    expect(instance.state).toBe('terminated');
  });

  it('finds and terminates an instance whose RunInstances answer never arrived when the start is cancelled', async () => {
    const { instance, result } = await cancelledWhileLaunching();
    expect('error' in result && (result.error as Error).message).toBe('cancelled while launching');
    expect(instance.state).toBe('terminated');
    const lookups = fake.callsOf('DescribeInstances').filter((call) => call.params['Filter.1.Name'] === 'client-token');
    expect(lookups.at(-1)?.params['Filter.1.Value.1']).toBe(instance.clientToken);
  });

  it('replays a launch whose request never reached EC2 with the same client token, and terminates what that launches', async () => {
    const { backend } = ec2Backend();
    const before = fake.instances.length;
    const callsBefore = fake.callsOf('RunInstances').length;
    fake.failNext('RunInstances', 1, 'drop');
    const cancel = new AbortController();
    const sent = nextCall('RunInstances');
    const starting = settle(backend.start(testAttributes(), boot(cancel.signal).options));
    await sent;
    cancel.abort(new Error('cancelled while launching'));
    expect('error' in (await starting)).toBe(true);
    const runs = fake.callsOf('RunInstances').slice(callsBefore);
    expect(runs).toHaveLength(2);
    expect(runs[1]?.params.ClientToken).toBe(runs[0]?.params.ClientToken);
    expect(fake.instances.slice(before).map((instance) => instance.state)).toEqual(['terminated']);
  });

  it('terminates an instance that fails to boot and says why', async () => {
    fake.bootDelayMs = 10 * 60_000;
    const { backend } = ec2Backend();
    const launched = launchedNow();
    const starting = settle(backend.start(testAttributes(), boot().options));
    const instance = await launched;
    await fake.interrupt(instance.instanceId, { reason: 'Server.InsufficientInstanceCapacity' });
    const result = await starting;
    expect('error' in result && result.error).toBeInstanceOf(NoCapacityError);
    expect(instance.state).toBe('terminated');
  });

  it('throws a requeueing ConnectionLostError when the spot instance is interrupted during the run', async () => {
    const { backend } = ec2Backend({ TRAVIS_WORKER_EC2_SPOT: 'true', TRAVIS_WORKER_EC2_SPOT_MAX_PRICE: '0.05' });
    const instance = await started(backend);
    const record = fake.instance(instance.id);
    expect(record.params['InstanceMarketOptions.MarketType']).toBe('spot');
    expect(record.params['InstanceMarketOptions.SpotOptions.MaxPrice']).toBe('0.05');
    await instance.upload(Buffer.from('echo ready; sleep 600; echo not reached'), { signal: never });
    const output = new CollectingWritable();
    const running = settle(instance.run({ output, signal: never }));
    await output.until('ready');
    await fake.interrupt(instance.id);
    const result = await running;
    const error = 'error' in result ? result.error : undefined;
    expect(error).toBeInstanceOf(ConnectionLostError);
    expect((error as ConnectionLostError).requeue).toBe(true);
    expect((error as ConnectionLostError).userMessage).toContain('spot instance');
    expect(output.text).not.toContain('not reached');
  });

  it.each(['0.0005', '0', '0.000'])('refuses SPOT_MAX_PRICE=%s while loading, naming the setting, as EC2 refuses it at launch', async (price) => {
    const spotEnv = { TRAVIS_WORKER_PROVIDER_NAME: 'ec2', ...ec2Env(fake, { TRAVIS_WORKER_EC2_SPOT: 'true', TRAVIS_WORKER_EC2_SPOT_MAX_PRICE: price }) };
    expect(configErrorOf(spotEnv, [definition])).toMatch(/TRAVIS_WORKER_EC2_SPOT_MAX_PRICE: .* below 0\.001/);
    // What the check spares the worker: the same price in a launch, which EC2 refuses.
    const { backend } = ec2BackendWith({ ...ec2Settings(fake, { TRAVIS_WORKER_EC2_SPOT: 'true' }), spotMaxPrice: price });
    const error = await rejection(backend.start(testAttributes(), boot().options));
    expect(errorMessage(error)).toContain(`Value (${price}) for parameter maxPrice is invalid`);
    expect(fake.callsOf('RunInstances').at(-1)).toMatchObject({ errorCode: 'InvalidParameterValue', params: { 'InstanceMarketOptions.SpotOptions.MaxPrice': price } });
  });

  it('notices an instance stopped by AWS while SSH still answers, and ends the run', async () => {
    const { backend } = ec2Backend();
    const instance = await started(backend);
    await instance.upload(Buffer.from('echo ready; sleep 600'), { signal: never });
    const output = new CollectingWritable();
    const running = settle(instance.run({ output, signal: never }));
    await output.until('ready');
    await fake.interrupt(instance.id, { state: 'stopped', reason: 'Server.ScheduledStop', dropSsh: false });
    const result = await running;
    const error = 'error' in result ? result.error : undefined;
    expect(error).toBeInstanceOf(ConnectionLostError);
    expect((error as ConnectionLostError).userMessage).toContain('stopped by AWS');
    // destroy (afterEach) terminates the stopped instance.
  });

  it('picks the image per language (IMAGE_<LANGUAGE> name filters take the newest available AMI of the owners) and reports a mapped vm_size as its instance type', async () => {
    const old = fake.registerImage({ name: 'travis-ruby-2020', creationDate: '2020-01-01T00:00:00.000Z' });
    const newest = fake.registerImage({ name: 'travis-ruby-2021', creationDate: '2021-01-01T00:00:00.000Z' });
    fake.registerImage({ name: 'travis-ruby-2022', creationDate: '2022-01-01T00:00:00.000Z', state: 'pending' });
    fake.registerImage({ name: 'travis-ruby-2023', creationDate: '2023-01-01T00:00:00.000Z', ownerId: '999999999999' });
    const bionic = fake.registerImage({ name: 'travis-bionic-ruby', creationDate: '2019-01-01T00:00:00.000Z', architecture: 'arm64' });
    const { backend } = ec2Backend({
      TRAVIS_WORKER_EC2_IMAGE_RUBY: 'travis-ruby-*',
      TRAVIS_WORKER_EC2_IMAGE_DIST_BIONIC_RUBY: bionic,
      TRAVIS_WORKER_EC2_IMAGE_PYTHON: 'legacy',
      TRAVIS_WORKER_EC2_IMAGE_LEGACY: old,
    });

    const ruby = await started(backend, testAttributes({ language: 'ruby', vmSize: 'large' }));
    expect(ruby.imageName).toBe('travis-ruby-2021');
    expect(fake.instance(ruby.id).imageId).toBe(newest);
    expect(fake.instance(ruby.id).instanceType).toBe('m6i.xlarge');
    // travis reports a mapped size as the instance type it became.
    expect(ruby.vmSize).toBe('m6i.xlarge');

    const onBionic = await started(backend, testAttributes({ language: 'ruby', dist: 'bionic', arch: 'arm64', vmSize: 'large' }));
    expect(fake.instance(onBionic.id).imageId).toBe(bionic);
    expect(fake.instance(onBionic.id).instanceType).toBe('m6g.xlarge');

    // No vm_size: an arm64 job still gets a Graviton type (INSTANCE_TYPE_ARM64), the only kind its AMI boots on.
    const armDefault = await started(backend, testAttributes({ language: 'ruby', dist: 'bionic', arch: 'arm64' }));
    expect(fake.instance(armDefault.id).instanceType).toBe('t4g.micro');

    const aliased = await started(backend, testAttributes({ language: 'python' }));
    expect(fake.instance(aliased.id).imageId).toBe(old);
    expect(aliased.vmSize).toBeUndefined();

    const other = await started(backend, testAttributes({ language: 'go' }));
    expect(other.imageName).toBe('travis-ci-default-xenial-1700000000');
  });

  it('says how to create the Spot service-linked role when a spot launch fails for lack of it', async () => {
    fake.spotRoleExists = false;
    fake.permissions = new Set(['ec2:DescribeImages', 'ec2:RunInstances', 'ec2:CreateTags', 'ec2:DescribeInstances', 'ec2:TerminateInstances']);
    try {
      const { backend } = ec2Backend({ TRAVIS_WORKER_EC2_SPOT: 'true' });
      const error = await rejection(backend.start(testAttributes(), boot().options));
      expect(errorMessage(error)).toContain('aws iam create-service-linked-role --aws-service-name spot.amazonaws.com');
    } finally {
      fake.permissions = undefined;
      fake.spotRoleExists = true;
    }
  });

  it('launches job instances whose metadata service answers IMDSv2 (session tokens) only', async () => {
    const { backend } = ec2Backend();
    const instance = await started(backend);
    expect(fake.instance(instance.id).httpTokens).toBe('required');
  });

  it('tags the instance and its volume in RunInstances, with a lease expiry, and makes no key pair', async () => {
    const { backend } = ec2Backend({ TRAVIS_WORKER_EC2_CUSTOM_TAGS: 'team=ci, cost-center=42,Name=not-ours' });
    const attributes = testAttributes({ jobId: 7070, repository: 'octo/tagged', hardTimeoutMs: 30 * 60_000 });
    const before = Date.now();
    const instance = await started(backend, attributes);
    const after = Date.now();
    const record = fake.instance(instance.id);
    expect(record.tags).toEqual({
      Name: `travis-job-${record.clientToken}`,
      'travis.job_id': '7070',
      'travis.repo': 'octo/tagged',
      'travis.github_org': 'octo',
      'travis.github_repo': 'tagged',
      'travis.dist': 'xenial',
      'travis.worker': 'test-worker',
      'travis.lease_expires': expect.any(String),
      team: 'ci',
      'cost-center': '42',
    });
    expect(record.volumeTags).toEqual(record.tags);
    const lease = Date.parse(record.tags['travis.lease_expires'] as string);
    expect(lease).toBeGreaterThanOrEqual(before + attributes.hardTimeoutMs + LEASE_MARGIN_MS);
    expect(lease).toBeLessThanOrEqual(after + attributes.hardTimeoutMs + LEASE_MARGIN_MS);
    // Only the four calls: no CreateKeyPair, no CreateTags, no key name on the instance.
    expect(new Set(fake.calls.map((call) => call.action))).toEqual(
      new Set(['RunInstances', 'DescribeInstances', 'TerminateInstances', 'DescribeImages']),
    );
    expect(Object.keys(record.params).some((key) => key.startsWith('KeyName'))).toBe(false);
    expect(record.params.InstanceInitiatedShutdownBehavior).toBe('terminate');
    expect(record.params['BlockDeviceMapping.1.Ebs.DeleteOnTermination']).toBe('true');
  });

  it('sends the termination again when one is lost, until EC2 says the instance is going', async () => {
    const { backend } = ec2Backend();
    const instance = await started(backend);
    fake.loseTerminations(1);
    fake.failNext('TerminateInstances', 1, 'server-error');
    await instance.destroy();
    const record = fake.instance(instance.id);
    expect(record.state).toBe('terminated');
    // One failed with a 5xx before reaching the instance, one was lost, one worked.
    expect(fake.callsOf('TerminateInstances').filter((call) => call.params['InstanceId.1'] === instance.id)).toHaveLength(3);
    expect(record.terminateRequests).toBe(2);
  });

  it("hands the job's fresh key to the instance in user data and never writes the private key to disk", async () => {
    const since = Date.now();
    const { backend } = ec2Backend({ TRAVIS_WORKER_EC2_USER_DATA: Buffer.from('echo operator-data\n').toString('base64url') });
    const first = await started(backend);
    const second = await started(backend);
    const record = fake.instance(first.id);
    expect(record.publicKey).toMatch(/^ssh-ed25519 /);
    expect(fake.instance(second.id).publicKey).not.toBe(record.publicKey);
    expect(record.userData).toMatch(/^#!\/usr\/bin\/env bash\n/);
    expect(record.userData).toContain('echo operator-data');
    expect(record.userData).not.toContain('PRIVATE KEY');

    await first.upload(Buffer.from('true'), { signal: never });
    expect(await first.run({ output: new CollectingWritable(), signal: never })).toEqual({ exitCode: 0 });
    const blob = (record.publicKey as string).split(' ')[1] as string;
    expect(privateKeysOnDiskFor(blob, since)).toEqual([]);
  });
});

/**
 * Files written since `since` under the places a key could land (temp dir,
 * the working tree, home) holding a private key whose public half is `blob`.
 */
function privateKeysOnDiskFor(blob: string, since: number): string[] {
  const found: string[] = [];
  const MAX_DEPTH = 5;
  const SKIP = new Set(['node_modules', '.git', 'proc', 'sys']);
  const visit = (dir: string, depth: number): void => {
    let entries;
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const entry of entries) {
      const path = join(dir, entry.name);
      if (entry.isDirectory() && depth < MAX_DEPTH && !SKIP.has(entry.name)) visit(path, depth + 1);
      if (!entry.isFile()) continue;
      try {
        const stat = statSync(path);
        if (stat.mtimeMs < since - 1000 || stat.size > 64 * 1024) continue;
        const text = readFileSync(path, 'utf8');
        if (!text.includes('PRIVATE KEY')) continue;
        const parsed = ssh2.utils.parseKey(text);
        const keys = Array.isArray(parsed) ? parsed : [parsed];
        for (const key of keys) {
          if (!(key instanceof Error) && key.getPublicSSH().toString('base64') === blob) found.push(path);
        }
      } catch {
        // Gone meanwhile, or unreadable: not a key we could have written.
      }
    }
  };
  for (const root of new Set([tmpdir(), process.cwd(), homedir()])) visit(root, 0);
  return found;
}
