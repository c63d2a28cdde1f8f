/**
 * The ec2 backend meeting EC2 answers that are not what EC2 sends (the
 * fake's `malformed-*` faults), through the real AWS SDK: a garbled answer
 * is asked for again a bounded number of times, a wrong shape fails the
 * start at once. Either way the start fails with a requeueing error that
 * names the call and what was wrong, whatever was launched is terminated
 * (found by its client token when the answer did not say), and a worker on
 * RabbitMQ goes on to run the next job.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { definition } from '../../backends/ec2/index.js';
import { MALFORMED_RETRIES } from '../../src/backend/cloud-api.js';
import type { Backend, StartOptions } from '../../src/backend/contract.js';
import { InstanceStartError } from '../../src/errors.js';
import { FakeEc2, type Ec2Action, type MalformedEc2Answer } from '../fakes/ec2-server.js';
import { ec2Env, ec2Settings, registerDefaultImage } from '../fakes/ec2-settings.js';
import { useAmqpWorker } from '../helpers/amqp-worker.js';
import { testAttributes } from '../helpers/attributes.js';
import { testBackendContext, type RecordedApiCall } from '../helpers/backend-context.js';
import { CollectingWritable } from '../helpers/collect.js';
import { captureLog, type CapturedLog, type LogLine } from '../helpers/log-capture.js';
import { drain, messageCount, publishRaw } from '../helpers/rabbitmq.js';

const never = new AbortController().signal;
const RETRYING = 'cloud API call failed, retrying';
let fake: FakeEc2;
const cleanups: (() => Promise<void>)[] = [];
const logs: CapturedLog[] = [];

beforeEach(async () => {
  fake = await FakeEc2.start({ bootDelayMs: 50 });
  registerDefaultImage(fake);
});

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  expect(fake.live().map((instance) => `${instance.instanceId} ${instance.state}`)).toEqual([]);
  // The proxy page echoed the signed request: none of it reached a log line.
  const text = logs.splice(0).flatMap((log) => log.lines.map((line) => JSON.stringify(line))).join('\n');
  for (const secret of [fake.accessKeyId, fake.secretAccessKey, 'Signature=']) expect(text).not.toContain(secret);
  await fake.close();
});

interface Harness {
  backend: Backend;
  apiCalls: RecordedApiCall[];
  log: CapturedLog;
  options: StartOptions;
}

function makeBackend(): Harness {
  const log = captureLog();
  logs.push(log);
  const context = testBackendContext({ logger: log.logger });
  const backend = definition.create(ec2Settings(fake), context);
  cleanups.push(() => backend.close());
  return {
    backend,
    apiCalls: context.apiCalls,
    log,
    options: { signal: never, progress: () => {}, logger: log.logger, recordPhase: () => {} },
  };
}

async function failedStart(harness: Harness): Promise<InstanceStartError> {
  const error = await harness.backend.start(testAttributes(), harness.options).then(
    (instance) => {
      cleanups.push(() => instance.destroy());
      throw new Error(`expected the start to fail, it started ${instance.id}`);
    },
    (err: unknown) => err,
  );
  expect(error).toBeInstanceOf(InstanceStartError);
  expect((error as InstanceStartError).requeue).toBe(true);
  return error as InstanceStartError;
}

const retriesOf = (log: CapturedLog, action: Ec2Action): LogLine[] => log.lines.filter((line) => line.msg === RETRYING && line['operation'] === action);
const outcomes = (harness: Harness, action: Ec2Action): string[] => harness.apiCalls.filter((call) => call.operation === action).map((call) => call.outcome);

describe('ec2 backend and malformed EC2 answers', () => {
  it('asks again after a proxy page, an answer cut short and an empty body, and launches one instance that runs the job', async () => {
    fake.failNext('DescribeImages', 1, 'malformed-html');
    fake.failNext('RunInstances', 1, 'malformed-truncated');
    fake.failNext('DescribeInstances', 1, 'malformed-empty');
    const harness = makeBackend();
    const instance = await harness.backend.start(testAttributes(), harness.options);
    cleanups.push(() => instance.destroy());
    // The cut-short launch was carried out; its retry carried the same client token.
    expect(fake.instances.map((launched) => launched.instanceId)).toEqual([instance.id]);
    for (const action of ['DescribeImages', 'RunInstances', 'DescribeInstances'] as const) expect(outcomes(harness, action).slice(0, 2)).toEqual(['error', 'ok']);
    const said = (action: Ec2Action): unknown[] => retriesOf(harness.log, action).map((line) => line['err']);
    expect(said('DescribeImages')).toEqual([
      expect.stringMatching(/^DescribeImages failed \(malformed\): the answer is an HTML page \(text\/html, \d+ bytes\) titled "502 Bad Gateway", not EC2's DescribeImages XML$/),
    ]);
    expect(said('RunInstances')).toEqual([
      expect.stringMatching(/^RunInstances failed \(malformed\): the answer's XML breaks off or is broken \(.+\) after \d+ bytes$/),
    ]);
    expect(said('DescribeInstances')).toEqual(["DescribeInstances failed (malformed): the answer is an empty body, not EC2's DescribeInstances XML"]);

    await instance.upload(Buffer.from('echo still usable'), { signal: never });
    const output = new CollectingWritable();
    expect((await instance.run({ output, signal: never })).exitCode).toBe(0);
    expect(output.text).toContain('still usable');

    fake.failNext('TerminateInstances', 1, 'malformed-empty');
    await instance.destroy();
    expect(fake.instance(instance.id).state).toBe('terminated');
    expect(outcomes(harness, 'TerminateInstances').slice(0, 2)).toEqual(['error', 'ok']);
  });

  it(`gives up when RunInstances stays garbled for ${1 + MALFORMED_RETRIES} tries, and terminates what it launched, found by client token`, async () => {
    fake.failNext('RunInstances', 1 + MALFORMED_RETRIES, 'malformed-truncated');
    const harness = makeBackend();
    const error = await failedStart(harness);
    expect(error.message).toMatch(/^could not start an EC2 instance: RunInstances failed \(malformed\): the answer's XML breaks off or is broken \(.+\) after \d+ bytes$/);
    expect(fake.callsOf('RunInstances')).toHaveLength(1 + MALFORMED_RETRIES);
    expect(retriesOf(harness.log, 'RunInstances')).toHaveLength(MALFORMED_RETRIES);
    expect(fake.instances).toHaveLength(1);
    expect(fake.instances[0]?.state).toBe('terminated');
    expect(harness.log.lines.map((line) => line.msg)).toContain('terminating the instance of an unanswered launch');
  });

  it('fails the start at once when RunInstances answers without its instancesSet, and terminates the instance it launched', async () => {
    fake.failNext('RunInstances', 1, 'malformed-shape');
    const harness = makeBackend();
    const error = await failedStart(harness);
    expect(error.message).toBe('could not start an EC2 instance: RunInstances failed (fatal): the RunInstances answer is not what the API sends: Instances: missing');
    // Not asked again: the only other RunInstances would be a replay, and the client token found the instance first.
    expect(fake.callsOf('RunInstances')).toHaveLength(1);
    expect(retriesOf(harness.log, 'RunInstances')).toEqual([]);
    expect(fake.instances).toHaveLength(1);
    expect(fake.instances[0]?.state).toBe('terminated');
  });

  it.each<[MalformedEc2Answer, RegExp]>([
    ['malformed-shape', /: Reservations: missing$/],
    ['malformed-state', /: Reservations\[0\]\.Instances\[0\]\.State\.Name: unknown state "exploded"$/],
    [
      'malformed-address',
      /: Reservations\[0\]\.Instances\[0\]\.PrivateIpAddress: "10\.0\.0\.256" is not an IP address; Reservations\[0\]\.Instances\[0\]\.PublicIpAddress: "localhost" is not an IP address$/,
    ],
  ])('fails the start at once when DescribeInstances answers %s while the instance boots, naming the field, and terminates it', async (fault, field) => {
    fake.failNext('DescribeInstances', 1, fault);
    const harness = makeBackend();
    const error = await failedStart(harness);
    expect(error.message).toMatch(/^could not start an EC2 instance: DescribeInstances failed \(fatal\): the DescribeInstances answer is not what the API sends: /);
    expect(error.message).toMatch(field);
    expect(retriesOf(harness.log, 'DescribeInstances')).toEqual([]);
    expect(fake.instances).toHaveLength(1);
    expect(fake.instances[0]?.state).toBe('terminated');
  });
});

describe('ec2 backend in a worker meeting a malformed answer', () => {
  const QUEUE = 'builds.ec2-malformed';
  const amqp = useAmqpWorker(QUEUE);

  function payload(id: number): string {
    return JSON.stringify({
      type: 'test',
      vm_type: 'default',
      queue: QUEUE,
      uuid: `uuid-${id}`,
      config: { language: 'ruby', script: `echo "job ${id} ran"`, os: 'linux', group: 'stable', dist: 'xenial' },
      job: { id, number: '1.1', queued_at: '2026-11-22T10:00:00Z' },
      source: { id: 1, number: '1' },
      repository: { id: 2, slug: 'octo/ec2-malformed' },
      timeouts: { hard_limit: 600, log_silence: null },
    });
  }

  it('requeues the job whose launch was answered with the wrong shape, terminates its instance, says why in the worker log, and runs the next job', async () => {
    const log = captureLog();
    logs.push(log);
    const w = await amqp.start({ TRAVIS_WORKER_PROVIDER_NAME: 'ec2', ...ec2Env(fake) }, log.logger);
    fake.failNext('RunInstances', 1, 'malformed-shape');
    const first = w.jobDone(95001);
    await publishRaw(amqp.vhost.uri, '', QUEUE, payload(95001));
    expect((await first).result).toEqual({ outcome: 'requeued', reason: 'E_INSTANCE_START' });
    const second = w.jobDone(95002);
    await publishRaw(amqp.vhost.uri, '', QUEUE, payload(95002));
    expect((await second).result).toEqual({ outcome: 'finished', state: 'passed' });

    const updates = await drain(amqp.vhost.uri, 'reporting.jobs.builds', await messageCount(amqp.vhost.uri, 'reporting.jobs.builds'), AbortSignal.timeout(20_000));
    const statesOf = (id: number): string[] =>
      updates.map((m) => m.body as { id: number; state: string }).filter((body) => body.id === id).map((body) => body.state);
    expect(statesOf(95001)).toEqual(['received', 'reset']);
    expect(statesOf(95002)).toEqual(['received', 'started', 'passed']);

    const failure = log.lines.find((line) => line.msg === 'job failed on infrastructure, requeueing');
    expect(failure).toMatchObject({
      job_id: 95001,
      code: 'E_INSTANCE_START',
      err: 'could not start an EC2 instance: RunInstances failed (fatal): the RunInstances answer is not what the API sends: Instances: missing',
    });
    const launched = (id: number): string[] =>
      fake.instances.filter((instance) => instance.tags['travis.job_id'] === String(id)).map((instance) => instance.state);
    expect(launched(95001)).toEqual(['terminated']);
    expect(launched(95002)).toEqual(['terminated']);
  });
});
