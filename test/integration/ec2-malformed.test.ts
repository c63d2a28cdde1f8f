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
import { FakeEc2, type Ec2Action, type MalformedEc2Answer } from '../fakes/ec2-server.js';
import { ec2Env, ec2Settings, registerDefaultImage } from '../fakes/ec2-settings.js';
import { useAmqpWorker } from '../helpers/amqp-worker.js';
import { faultPayload } from '../helpers/fault-jobs.js';
import { BackendHarnesses, expectRequeuedThenPassed } from '../helpers/backend-harness.js';
import { CollectingWritable } from '../helpers/collect.js';

const never = new AbortController().signal;
let fake: FakeEc2;
let backends: BackendHarnesses<Ec2Action>;

beforeEach(async () => {
  fake = await FakeEc2.start({ bootDelayMs: 50 });
  registerDefaultImage(fake);
  backends = new BackendHarnesses((context) => definition.create(ec2Settings(fake), context));
});

afterEach(async () => {
  await backends.close();
  expect(fake.live().map((instance) => `${instance.instanceId} ${instance.state}`)).toEqual([]);
  // The proxy page echoed the signed request: none of it reached a log line.
  const text = backends.loggedText();
  for (const secret of [fake.accessKeyId, fake.secretAccessKey, 'Signature=']) expect(text).not.toContain(secret);
  await fake.close();
});

describe('ec2 backend and malformed EC2 answers', () => {
  it('asks again after a proxy page, an answer cut short and an empty body, and launches one instance that runs the job', async () => {
    fake.failNext('DescribeImages', 1, 'malformed-html');
    fake.failNext('RunInstances', 1, 'malformed-truncated');
    fake.failNext('DescribeInstances', 1, 'malformed-empty');
    const harness = backends.harness();
    const instance = await harness.start();
    // The cut-short launch was carried out; its retry carried the same client token.
    expect(fake.instances.map((launched) => launched.instanceId)).toEqual([instance.id]);
    for (const action of ['DescribeImages', 'RunInstances', 'DescribeInstances'] as const) expect(harness.outcomes(action).slice(0, 2)).toEqual(['error', 'ok']);
    const said = (action: Ec2Action): unknown[] => harness.retries(action).map((line) => line['err']);
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
    expect(harness.outcomes('TerminateInstances').slice(0, 2)).toEqual(['error', 'ok']);
  });

  it(`gives up when RunInstances stays garbled for ${1 + MALFORMED_RETRIES} tries, and terminates what it launched, found by client token`, async () => {
    fake.failNext('RunInstances', 1 + MALFORMED_RETRIES, 'malformed-truncated');
    const harness = backends.harness();
    const error = await harness.failedStart();
    expect(error.message).toMatch(/^could not start an EC2 instance: RunInstances failed \(malformed\): the answer's XML breaks off or is broken \(.+\) after \d+ bytes$/);
    expect(fake.callsOf('RunInstances')).toHaveLength(1 + MALFORMED_RETRIES);
    expect(harness.retries('RunInstances')).toHaveLength(MALFORMED_RETRIES);
    expect(fake.instances).toHaveLength(1);
    expect(fake.instances[0]?.state).toBe('terminated');
    expect(harness.log.lines.map((line) => line.msg)).toContain('terminating the instance of an unanswered launch');
  });

  it('fails the start at once when RunInstances answers without its instancesSet, and terminates the instance it launched', async () => {
    fake.failNext('RunInstances', 1, 'malformed-shape');
    const harness = backends.harness();
    const error = await harness.failedStart();
    expect(error.message).toBe('could not start an EC2 instance: RunInstances failed (fatal): the RunInstances answer is not what the API sends: Instances: missing');
    // Not asked again: the only other RunInstances would be a replay, and the client token found the instance first.
    expect(fake.callsOf('RunInstances')).toHaveLength(1);
    expect(harness.retries('RunInstances')).toEqual([]);
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
    const harness = backends.harness();
    const error = await harness.failedStart();
    expect(error.message).toMatch(/^could not start an EC2 instance: DescribeInstances failed \(fatal\): the DescribeInstances answer is not what the API sends: /);
    expect(error.message).toMatch(field);
    expect(harness.retries('DescribeInstances')).toEqual([]);
    expect(fake.instances).toHaveLength(1);
    expect(fake.instances[0]?.state).toBe('terminated');
  });
});

describe('ec2 backend in a worker meeting a malformed answer', () => {
  const QUEUE = 'builds.ec2-malformed';
  const amqp = useAmqpWorker(QUEUE);

  const payload = (id: number): string => faultPayload(QUEUE, id, { language: 'ruby', script: `echo "job ${id} ran"` });

  it('requeues the job whose launch was answered with the wrong shape, terminates its instance, says why in the worker log, and runs the next job', async () => {
    const log = backends.captureLog();
    const w = await amqp.start({ TRAVIS_WORKER_PROVIDER_NAME: 'ec2', ...ec2Env(fake) }, log.logger);
    fake.failNext('RunInstances', 1, 'malformed-shape');
    await expectRequeuedThenPassed(w, { uri: amqp.vhost.uri, queue: QUEUE, payload, requeued: 95001, passed: 95002 });

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
