/**
 * The gce backend meeting Compute API answers that are not what the API
 * sends (the fake's `malformed-*` faults), through the real SDK: a garbled
 * answer is asked for again a bounded number of times, a wrong shape fails
 * the start at once. Either way the start fails with a requeueing error
 * that names the call and what was wrong, the VM is deleted, and a worker
 * on RabbitMQ goes on to run the next job.
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { definition as gce } from '../../backends/gce/index.js';
import { MALFORMED_RETRIES } from '../../src/backend/cloud-api.js';
import type { Backend, Instance, StartOptions } from '../../src/backend/contract.js';
import { InstanceStartError } from '../../src/errors.js';
import { FakeGce, type FakeGceOperationName, type MalformedGceAnswer } from '../fakes/gce-server.js';
import { gceEnv, gceSettings, travisImages } from '../fakes/gce-settings.js';
import { useAmqpWorker } from '../helpers/amqp-worker.js';
import { testAttributes } from '../helpers/attributes.js';
import { testBackendContext, type RecordedApiCall } from '../helpers/backend-context.js';
import { startBuildApi, type FakeBuildApi } from '../helpers/build-api.js';
import { CollectingWritable } from '../helpers/collect.js';
import { captureLog, type CapturedLog, type LogLine } from '../helpers/log-capture.js';
import { drain, messageCount, publishRaw } from '../helpers/rabbitmq.js';

const never = new AbortController().signal;
const RETRYING = 'cloud API call failed, retrying';
let fake: FakeGce;

beforeEach(async () => {
  fake = await FakeGce.start({ images: travisImages() });
});

const backends: Backend[] = [];
const instances: Instance[] = [];
const logs: CapturedLog[] = [];
afterEach(async () => {
  await Promise.all(instances.splice(0).map((instance) => instance.destroy()));
  await Promise.all(backends.splice(0).map((backend) => backend.close()));
  expect(fake.liveInstances().map((record) => `${record.name} ${record.status}`)).toEqual([]);
  // Whatever went wrong, no credential reached a log line.
  const text = logs.splice(0).flatMap((log) => log.lines.map((line) => JSON.stringify(line))).join('\n');
  expect(text).not.toMatch(/PRIVATE KEY|eyJ[\w-]+\.[\w-]+\./);
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
  const backend = gce.create(gceSettings(fake), context);
  backends.push(backend);
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
      instances.push(instance);
      throw new Error(`expected the start to fail, it started ${instance.id}`);
    },
    (err: unknown) => err,
  );
  expect(error).toBeInstanceOf(InstanceStartError);
  expect((error as InstanceStartError).requeue).toBe(true);
  return error as InstanceStartError;
}

const retriesOf = (log: CapturedLog, operation: string): LogLine[] => log.lines.filter((line) => line.msg === RETRYING && line['operation'] === operation);
const outcomes = (harness: Harness, operation: string): string[] => harness.apiCalls.filter((call) => call.operation === operation).map((call) => call.outcome);

describe('gce backend and malformed Compute API answers', () => {
  it('asks again after a proxy page, an answer cut short and an empty body, and boots one VM that runs the job', async () => {
    fake.inject('instances.insert', 'malformed-html');
    fake.inject('zoneOperations.get', 'malformed-truncated');
    fake.inject('instances.get', 'malformed-empty');
    const harness = makeBackend();
    const instance = await harness.backend.start(testAttributes(), harness.options);
    instances.push(instance);
    expect(fake.record.map((record) => record.name)).toEqual([instance.id]);
    expect(outcomes(harness, 'instances.insert')).toEqual(['error', 'ok']);
    expect(outcomes(harness, 'zoneOperations.get')[0]).toBe('error');
    expect(outcomes(harness, 'instances.get')[0]).toBe('error');
    const said = (operation: string): unknown[] => retriesOf(harness.log, operation).map((line) => line['err']);
    expect(said('instances.insert')).toEqual([expect.stringMatching(/^instances\.insert failed \(malformed\): the answer is not whole JSON \(Unexpected token '<'.*\): a proxy's page, or an answer cut short$/)]);
    expect(said('zoneOperations.get')).toEqual([expect.stringMatching(/^zoneOperations\.get failed \(malformed\): the answer is not whole JSON \(.*at position \d+\)/)]);
    expect(said('instances.get')).toEqual(['instances.get failed (malformed): the answer has an empty body']);

    await instance.upload(Buffer.from('echo still usable'), { signal: never });
    const output = new CollectingWritable();
    expect((await instance.run({ output, signal: never })).exitCode).toBe(0);
    expect(output.text).toContain('still usable');
  });

  it(`gives up when the answer stays garbled for ${1 + MALFORMED_RETRIES} tries, and deletes the VM those inserts made`, async () => {
    fake.inject('instances.insert', 'malformed-truncated', 1 + MALFORMED_RETRIES);
    const harness = makeBackend();
    const error = await failedStart(harness);
    expect(error.message).toMatch(/^could not start instance travis-job-\S+: instances\.insert failed \(malformed\): the answer is not whole JSON \(/);
    expect(fake.count('instances.insert')).toBe(1 + MALFORMED_RETRIES);
    expect(retriesOf(harness.log, 'instances.insert')).toHaveLength(MALFORMED_RETRIES);
    // Every attempt carried the same request id: one VM, now deleted.
    expect(fake.record).toHaveLength(1);
    expect(fake.record[0]?.deleted).toBe(true);
  });

  it.each<[FakeGceOperationName, MalformedGceAnswer, RegExp]>([
    ['instances.insert', 'malformed-shape', /instances\.insert failed \(fatal\): the insert operation is not what the API sends: name: missing; status: missing$/],
    // The SDK drops an operation status it has no enum value for: it reads as missing.
    ['zoneOperations.get', 'malformed-state', /zoneOperations\.get failed \(fatal\): operation operation-\S+ is not what the API sends: status: missing$/],
    ['instances.get', 'malformed-state', /instances\.get failed \(fatal\): instance travis-job-\S+ is not what the API sends: status: unknown status "MELTING"$/],
    [
      'instances.get',
      'malformed-address',
      /instances\.get failed \(fatal\): instance travis-job-\S+ is not what the API sends: networkInterfaces\[0\]\.networkIP: "localhost; rm -rf \/" is not an IP address; networkInterfaces\[0\]\.accessConfigs\[0\]\.natIP: "999\.1\.2\.3" is not an IP address$/,
    ],
    ['instances.get', 'malformed-shape', /: instances\.get answered that instance (travis-job-\S+) is RUNNING but has no IP address$/],
  ])('fails the start at once when %s answers %s, naming the call and the field, and deletes the VM', async (operation, fault, message) => {
    fake.inject(operation, fault);
    const harness = makeBackend();
    const error = await failedStart(harness);
    expect(error.message).toMatch(/^could not start instance travis-job-\S+: /);
    expect(error.message).toMatch(message);
    // A wrong shape is not asked for again.
    expect(retriesOf(harness.log, operation)).toEqual([]);
    expect(fake.record).toHaveLength(1);
    expect(fake.record[0]).toMatchObject({ deleted: true, deleteRequests: 1 });
  });

  it('fails the start on an image list of the wrong shape before anything is made', async () => {
    fake.inject('images.list', 'malformed-shape');
    const harness = makeBackend();
    const error = await failedStart(harness);
    expect(error.message).toMatch(/^could not start instance travis-job-\S+: images\.list failed \(fatal\): the answer is JSON of the wrong shape \(expected an array for field items\)$/);
    expect(fake.record).toEqual([]);
  });
});

describe('gce backend in a worker meeting a malformed answer', () => {
  const QUEUE = 'builds.gce-malformed';
  const amqp = useAmqpWorker(QUEUE);
  let buildApi: FakeBuildApi;

  beforeAll(async () => {
    buildApi = await startBuildApi('token', (jobId) => `echo "job ${jobId} ran"; exit 0`);
  });

  afterAll(() => {
    buildApi?.close();
  });

  function payload(id: number): string {
    return JSON.stringify({
      type: 'test',
      vm_type: 'default',
      queue: QUEUE,
      uuid: `uuid-${id}`,
      config: { language: 'ruby', os: 'linux', group: 'stable', dist: 'xenial' },
      job: { id, number: '1.1', commit: 'abc', branch: 'main', pull_request: false, queued_at: '2024-01-01T00:00:00Z' },
      source: { id: 1, number: '1', event_type: 'push' },
      repository: { id: 9, slug: 'octo/gce-malformed' },
      timeouts: { hard_limit: 600, log_silence: null },
    });
  }

  it('requeues the job whose insert was answered with the wrong shape, deletes its VM, says why in the worker log, and runs the next job', async () => {
    const log = captureLog();
    logs.push(log);
    const w = await amqp.start({ TRAVIS_WORKER_BUILD_API_URI: buildApi.uri, ...gceEnv(fake) }, log.logger);
    fake.inject('instances.insert', 'malformed-shape');
    const first = w.jobDone(9201);
    await publishRaw(amqp.vhost.uri, '', QUEUE, payload(9201));
    expect((await first).result).toEqual({ outcome: 'requeued', reason: 'E_INSTANCE_START' });
    const second = w.jobDone(9202);
    await publishRaw(amqp.vhost.uri, '', QUEUE, payload(9202));
    expect((await second).result).toEqual({ outcome: 'finished', state: 'passed' });

    const updates = await drain(amqp.vhost.uri, 'reporting.jobs.builds', await messageCount(amqp.vhost.uri, 'reporting.jobs.builds'), AbortSignal.timeout(20_000));
    const statesOf = (id: number): string[] =>
      updates.map((m) => m.body as { id: number; state: string }).filter((body) => body.id === id).map((body) => body.state);
    expect(statesOf(9201)).toEqual(['received', 'reset']);
    expect(statesOf(9202)).toEqual(['received', 'started', 'passed']);

    const failure = log.lines.find((line) => line.msg === 'job failed on infrastructure, requeueing');
    expect(failure).toMatchObject({ job_id: 9201, code: 'E_INSTANCE_START', level: 'error' });
    expect(failure?.['err']).toMatch(
      /^could not start instance travis-job-\S+: instances\.insert failed \(fatal\): the insert operation is not what the API sends: name: missing; status: missing$/,
    );
    expect(fake.record.map((record) => [record.labels['travis-job-id'], record.deleted])).toEqual([
      ['9201', true],
      ['9202', true],
    ]);
  });
});
