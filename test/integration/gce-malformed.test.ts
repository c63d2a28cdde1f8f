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
import { FakeGce, type FakeGceOperationName, type MalformedGceAnswer } from '../fakes/gce-server.js';
import { gceEnv, gceSettings, travisImages } from '../fakes/gce-settings.js';
import { useAmqpWorker } from '../helpers/amqp-worker.js';
import { faultPayload } from '../helpers/fault-jobs.js';
import { BackendHarnesses, expectRequeuedThenPassed } from '../helpers/backend-harness.js';
import { startBuildApi, type FakeBuildApi } from '../helpers/build-api.js';
import { CollectingWritable } from '../helpers/collect.js';

const never = new AbortController().signal;
let fake: FakeGce;
let backends: BackendHarnesses;

beforeEach(async () => {
  fake = await FakeGce.start({ images: travisImages() });
  backends = new BackendHarnesses((context) => gce.create(gceSettings(fake), context));
});

afterEach(async () => {
  await backends.close();
  expect(fake.liveInstances().map((record) => `${record.name} ${record.status}`)).toEqual([]);
  // Whatever went wrong, no credential reached a log line.
  expect(backends.loggedText()).not.toMatch(/PRIVATE KEY|eyJ[\w-]+\.[\w-]+\./);
  await fake.close();
});

describe('gce backend and malformed Compute API answers', () => {
  it('asks again after a proxy page, an answer cut short and an empty body, and boots one VM that runs the job', async () => {
    fake.inject('instances.insert', 'malformed-html');
    fake.inject('zoneOperations.wait', 'malformed-truncated');
    fake.inject('instances.get', 'malformed-empty');
    const harness = backends.harness();
    const instance = await harness.start();
    expect(fake.record.map((record) => record.name)).toEqual([instance.id]);
    expect(harness.outcomes('instances.insert')).toEqual(['error', 'ok']);
    expect(harness.outcomes('zoneOperations.wait')[0]).toBe('error');
    expect(harness.outcomes('instances.get')[0]).toBe('error');
    const said = (operation: string): unknown[] => harness.retries(operation).map((line) => line['err']);
    expect(said('instances.insert')).toEqual([expect.stringMatching(/^instances\.insert failed \(malformed\): the answer is not valid JSON( \(at character \d+\))?: a proxy's page, or an answer cut short$/)]);
    // Where the answer stops, never the parser's excerpt of it: an answer may carry what the job's VM was given.
    expect(said('zoneOperations.wait')).toEqual([
      expect.stringMatching(/^zoneOperations\.wait failed \(malformed\): the answer is not valid JSON \(at character \d+\): a proxy's page, or an answer cut short$/),
    ]);
    expect(said('instances.get')).toEqual(['instances.get failed (malformed): the answer has an empty body']);

    await instance.upload(Buffer.from('echo still usable'), { signal: never });
    const output = new CollectingWritable();
    expect((await instance.run({ output, signal: never })).exitCode).toBe(0);
    expect(output.text).toContain('still usable');
  });

  it(`gives up when the answer stays garbled for ${1 + MALFORMED_RETRIES} tries, and deletes the VM those inserts made`, async () => {
    fake.inject('instances.insert', 'malformed-truncated', 1 + MALFORMED_RETRIES);
    const harness = backends.harness();
    const error = await harness.failedStart();
    expect(error.message).toMatch(/^could not start instance travis-job-\S+: instances\.insert failed \(malformed\): the answer is not valid JSON/);
    expect(fake.count('instances.insert')).toBe(1 + MALFORMED_RETRIES);
    expect(harness.retries('instances.insert')).toHaveLength(MALFORMED_RETRIES);
    // Every attempt carried the same request id: one VM, now deleted.
    expect(fake.record).toHaveLength(1);
    expect(fake.record[0]?.deleted).toBe(true);
  });

  it.each<[FakeGceOperationName, MalformedGceAnswer, RegExp]>([
    ['instances.insert', 'malformed-shape', /instances\.insert failed \(fatal\): the insert operation is not what the API sends: name: missing; status: missing$/],
    // The SDK drops an operation status it has no enum value for: it reads as missing.
    ['zoneOperations.wait', 'malformed-state', /zoneOperations\.wait failed \(fatal\): operation operation-\S+ is not what the API sends: status: missing$/],
    ['instances.get', 'malformed-state', /instances\.get failed \(fatal\): instance travis-job-\S+ is not what the API sends: status: unknown status "MELTING"$/],
    [
      'instances.get',
      'malformed-address',
      /instances\.get failed \(fatal\): instance travis-job-\S+ is not what the API sends: networkInterfaces\[0\]\.networkIP: "localhost; rm -rf \/" is not an IP address; networkInterfaces\[0\]\.accessConfigs\[0\]\.natIP: "999\.1\.2\.3" is not an IP address$/,
    ],
    ['instances.get', 'malformed-shape', /: instances\.get answered that instance (travis-job-\S+) is RUNNING but has no IP address$/],
  ])('fails the start at once when %s answers %s, naming the call and the field, and deletes the VM', async (operation, fault, message) => {
    fake.inject(operation, fault);
    const harness = backends.harness();
    const error = await harness.failedStart();
    expect(error.message).toMatch(/^could not start instance travis-job-\S+: /);
    expect(error.message).toMatch(message);
    // A wrong shape is not asked for again.
    expect(harness.retries(operation)).toEqual([]);
    expect(fake.record).toHaveLength(1);
    expect(fake.record[0]).toMatchObject({ deleted: true, deleteRequests: 1 });
  });

  it('fails the start on an image list of the wrong shape before anything is made', async () => {
    fake.inject('images.list', 'malformed-shape');
    const harness = backends.harness();
    const error = await harness.failedStart();
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

  const payload = (id: number): string => faultPayload(QUEUE, id);

  it('requeues the job whose insert was answered with the wrong shape, deletes its VM, says why in the worker log, and runs the next job', async () => {
    const log = backends.captureLog();
    const w = await amqp.start({ TRAVIS_WORKER_BUILD_API_URI: buildApi.uri, ...gceEnv(fake) }, log.logger);
    fake.inject('instances.insert', 'malformed-shape');
    await expectRequeuedThenPassed(w, { uri: amqp.vhost.uri, queue: QUEUE, payload, requeued: 9201, passed: 9202 });

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
