/**
 * What the hub and the logs service see of a job, against travis-ci/worker's
 * own fixtures and texts: its example payload (example-payload.json, retyped
 * below) runs through the whole worker on the real broker, its cancel
 * command (amqp_canceller_test.go) cancels, the first log part's meta and the
 * worker-information fold are as travis writes them, and a requeued run's
 * log is closed with a final part.
 */
import { describe, expect, it } from 'vitest';
import { useAmqpWorker } from '../helpers/amqp-worker.js';
import { drain, messageCount, publishRaw, type DrainedMessage } from '../helpers/rabbitmq.js';
import type { TestWorker } from '../helpers/worker.js';

const QUEUE = 'builds.ec2';
const amqp = useAmqpWorker(QUEUE);

/** travis-ci/worker's example-payload.json, field for field. */
const EXAMPLE_PAYLOAD = {
  type: 'test',
  vm_type: 'default',
  queue: 'builds.ec2',
  config: { language: 'ruby', script: 'echo Hello World', '.result': 'configured', os: 'linux', group: 'stable', dist: 'trusty' },
  env_vars: [],
  job: {
    id: 721270,
    number: '445.1',
    commit: 'fad82cc76a5df58e749b82f7f2ab10ede52ba730',
    commit_range: '0faba6fc0a3e...fad82cc76a5d',
    commit_message: 'updating contents of RANDOM',
    branch: 'master',
    ref: null,
    tag: null,
    pull_request: false,
    state: 'passed',
    secure_env_enabled: true,
    secure_env_removed: false,
    debug_options: {},
    queued_at: '2018-05-14T14:26:50Z',
    allow_failure: false,
    stage_name: null,
  },
  source: { id: 721269, number: '445', event_type: 'push' },
  repository: {
    id: 44461,
    github_id: 55685806,
    private: false,
    slug: 'igorwwwwwwwwwwwwwwwwwwww/hello-world',
    source_url: 'https://github.com/igorwwwwwwwwwwwwwwwwwwww/hello-world.git',
    source_host: 'github.com',
    api_url: 'https://api.github.com/repos/igorwwwwwwwwwwwwwwwwwwww/hello-world',
    last_build_id: 721269,
    last_build_number: '445',
    last_build_started_at: '2018-05-14T14:26:52Z',
    last_build_finished_at: '2018-05-14T14:27:06Z',
    last_build_duration: 14,
    last_build_state: 'passed',
    default_branch: 'master',
    description: 'Hi!',
  },
  ssh_key: null,
  timeouts: { hard_limit: 3000, log_silence: null },
  cache_settings: {
    fetch_timeout: 1200,
    push_timeout: 7200,
    s3: {
      access_key_id: 'nopenotanaccesskey',
      aws_signature_version: '4',
      bucket: 'travis-cache-staging-org',
      hostname: 's3.amazonaws.com',
      secret_access_key: 'vEry_SeCrEt_AcCeSs_KeY',
    },
    type: 's3',
  },
  enterprise: false,
  prefer_https: false,
};
const EXAMPLE_JOB_ID = 721270;

function start(env: Record<string, string> = {}): Promise<TestWorker> {
  return amqp.start({
    TRAVIS_WORKER_PROVIDER_NAME: 'fake',
    TRAVIS_WORKER_FAKE_LOG_OUTPUT: 'Hello World\n',
    TRAVIS_WORKER_INFRA: 'ec2',
    TRAVIS_WORKER_HOSTNAME: 'frizzlefry.example.local',
    ...env,
  });
}

const timeout = (): AbortSignal => AbortSignal.timeout(20_000);

async function drainAll(queue: string): Promise<DrainedMessage[]> {
  return drain(amqp.vhost.uri, queue, await messageCount(amqp.vhost.uri, queue), timeout());
}

const bodies = (messages: DrainedMessage[]): Record<string, unknown>[] => messages.map((m) => m.body as Record<string, unknown>);
const logTextOf = (messages: DrainedMessage[]): string => bodies(messages).map((b) => b.log as string).join('');

describe('travis-ci/worker fixtures', () => {
  it('runs example-payload.json to passed, with travis-shaped states and log parts', async () => {
    const w = await start({ TRAVIS_WORKER_FAKE_STARTUP_DURATION: '250ms' });
    const done = w.jobDone(EXAMPLE_JOB_ID);
    await publishRaw(amqp.vhost.uri, '', QUEUE, JSON.stringify(EXAMPLE_PAYLOAD));
    expect((await done).result).toEqual({ outcome: 'finished', state: 'passed' });
    const states = bodies(await drainAll('reporting.jobs.builds'));
    expect(states.map((s) => [s.id, s.state])).toEqual([
      [EXAMPLE_JOB_ID, 'received'],
      [EXAMPLE_JOB_ID, 'started'],
      [EXAMPLE_JOB_ID, 'passed'],
    ]);
    const parts = bodies(await drainAll('reporting.jobs.logs'));
    expect(parts.map((p) => p.number)).toEqual(parts.map((_p, i) => i));
    expect(parts.map((p) => p.final)).toEqual(parts.map((_p, i) => i === parts.length - 1));
    // amqp_log_writer.go's JobStartedMeta: every key, in its order, queued_at as the payload gave it.
    const first = parts.find((p) => 'meta' in p);
    expect(JSON.stringify(first?.meta)).toBe('{"queued_at":"2018-05-14T14:26:50Z","repo":"igorwwwwwwwwwwwwwwwwwwww/hello-world","queue":"builds.ec2","infra":"ec2"}');
    // step_write_worker_info_test.go's expectations, line for line.
    const log = parts.map((p) => p.log as string).join('');
    expect(log).toContain('travis_fold:start:worker_info\r\x1b[0K');
    expect(log).toContain('\x1b[33;1mWorker information\x1b[0m\n');
    expect(log).toContain('\nhostname: frizzlefry.example.local:1\n');
    expect(log).toMatch(/\nversion: mayfly \S+ \S+\n/);
    expect(log).toContain(`\ninstance: fake-${EXAMPLE_JOB_ID}-1 fake (via amqp)\n`);
    expect(log).toContain('\nstartup: 250ms\n');
    expect(log).toContain('\ntravis_fold:end:worker_info\r\x1b[0K');
    expect(log).toContain('Hello World');
    // No progress fold unless TRAVIS_WORKER_PROGRESS_TYPE=text.
    expect(log).not.toContain('step_start_instance');
  });

  it("cancels a running job on amqp_canceller_test.go's cancel command", async () => {
    const w = await start({ TRAVIS_WORKER_FAKE_RUN_SLEEP: '10m' });
    const done = w.jobDone(123);
    const payload = { ...EXAMPLE_PAYLOAD, job: { ...EXAMPLE_PAYLOAD.job, id: 123 } };
    await publishRaw(amqp.vhost.uri, '', QUEUE, JSON.stringify(payload));
    await drain(amqp.vhost.uri, 'reporting.jobs.builds', 2, timeout());
    // Byte for byte as the Go test sends it: no reason.
    await publishRaw(amqp.vhost.uri, 'worker.commands', '', '{\n\t\t\t\t"type": "cancel_job",\n\t\t\t\t"job_id": 123,\n\t\t\t\t"source": "tests"\n\t\t\t}');
    expect((await done).result).toEqual({ outcome: 'finished', state: 'cancelled' });
    const parts = await drainAll('reporting.jobs.logs');
    expect(logTextOf(parts).endsWith('\n\nDone: Job Cancelled\n\n')).toBe(true);
  });
});

describe('the log as the logs service sees it', () => {
  it('sends every meta key when the payload has no queued_at and no queue: null and empty', async () => {
    const w = await start();
    const done = w.jobDone(77);
    const payload: Record<string, unknown> = { ...EXAMPLE_PAYLOAD, job: { id: 77, number: '1.1' } };
    delete payload.queue;
    await publishRaw(amqp.vhost.uri, '', QUEUE, JSON.stringify(payload));
    await done;
    const first = bodies(await drainAll('reporting.jobs.logs')).find((p) => 'meta' in p);
    expect(JSON.stringify(first?.meta)).toBe('{"queued_at":null,"repo":"igorwwwwwwwwwwwwwwwwwwww/hello-world","queue":"","infra":"ec2"}');
  });

  it('keeps queued_at exactly as given', async () => {
    const w = await start();
    const done = w.jobDone(78);
    const queuedAt = '2018-05-14T16:26:50.123456+02:00';
    await publishRaw(amqp.vhost.uri, '', QUEUE, JSON.stringify({ ...EXAMPLE_PAYLOAD, job: { ...EXAMPLE_PAYLOAD.job, id: 78, queued_at: queuedAt } }));
    await done;
    const first = bodies(await drainAll('reporting.jobs.logs')).find((p) => 'meta' in p);
    expect((first?.meta as { queued_at: string }).queued_at).toBe(queuedAt);
  });

  it('closes a requeued run’s log with a final part; the next run numbers from 0 again', async () => {
    // Every run loses its connection; with a limit of one requeue the second run ends errored.
    const w = await start({ TRAVIS_WORKER_FAKE_ERROR: 'true', TRAVIS_WORKER_REQUEUE_LIMIT: '1' });
    const payload = JSON.stringify({ ...EXAMPLE_PAYLOAD, job: { ...EXAMPLE_PAYLOAD.job, id: 79 } });
    const requeued = w.jobDone(79);
    await publishRaw(amqp.vhost.uri, '', QUEUE, payload);
    expect((await requeued).result).toMatchObject({ outcome: 'requeued' });
    // The hub answers `reset` by queueing the job again.
    const errored = w.jobDone(79);
    await publishRaw(amqp.vhost.uri, '', QUEUE, payload);
    expect((await errored).result).toEqual({ outcome: 'finished', state: 'errored' });
    const parts = bodies(await drainAll('reporting.jobs.logs'));
    const finals = parts.flatMap((p, i) => (p.final === true ? [i] : []));
    expect(finals).toHaveLength(2);
    const [firstFinal] = finals as [number, number];
    expect(parts.slice(0, firstFinal + 1).map((p) => p.number)).toEqual(parts.slice(0, firstFinal + 1).map((_p, i) => i));
    expect(parts[firstFinal + 1]?.number).toBe(0);
  });
});
