import { describe, expect, it } from 'vitest';
import { MAX_PAYLOAD_NESTING, parseJobPayload } from '../../src/job/payload.js';

const encode = (value: unknown): Buffer => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value));

const travisExample = {
  type: 'test',
  vm_type: 'default',
  queue: 'builds.ec2',
  config: { language: 'ruby', script: 'echo Hello World', os: 'linux', group: 'stable', dist: 'trusty' },
  env_vars: [],
  job: { id: 721270, number: '445.1', commit: 'fad82cc7', branch: 'master', pull_request: false, queued_at: '2018-05-14T14:26:50Z' },
  source: { id: 721269, number: '445', event_type: 'push' },
  repository: { id: 44461, slug: 'octo/hello-world' },
  ssh_key: null,
  timeouts: { hard_limit: 3000, log_silence: null },
};

describe('parseJobPayload', () => {
  it('reads the fields of a travis payload and keeps the raw object', () => {
    const parsed = parseJobPayload(encode(travisExample));
    expect(parsed.kind).toBe('ok');
    if (parsed.kind !== 'ok') return;
    const p = parsed.payload;
    expect(p.jobId).toBe(721270);
    expect(p.jobNumber).toBe('445.1');
    expect(p.repositorySlug).toBe('octo/hello-world');
    expect(p.queuedAt?.toISOString()).toBe('2018-05-14T14:26:50.000Z');
    expect(p.hardLimitMs).toBe(3_000_000);
    expect(p.logSilenceMs).toBeUndefined();
    expect(p.queue).toBe('builds.ec2');
    expect(p.stateUpdateCount).toBe(0);
    expect(p.invalid).toBeUndefined();
    expect(p.raw).toEqual(travisExample);
  });

  it('treats 0 and null timeouts as "use the worker default"', () => {
    const parsed = parseJobPayload(encode({ ...travisExample, timeouts: { hard_limit: 0, log_silence: null } }));
    expect(parsed.kind === 'ok' && parsed.payload.hardLimitMs).toBeUndefined();
  });

  it('starts the state count at meta.state_update_count', () => {
    const parsed = parseJobPayload(encode({ ...travisExample, meta: { state_update_count: 7 } }));
    expect(parsed.kind === 'ok' && parsed.payload.stateUpdateCount).toBe(7);
  });

  it.each([
    ['not JSON', '{"job":', /^payload is not valid JSON/],
    ['not JSON, which the reason does not quote', 'secret-value', /^payload is not valid JSON$/],
    ['an array', '[1,2]', /not a JSON object/],
    ['null', 'null', /not a JSON object/],
    ['no job', '{"config":{}}', /job/],
    ['a string job id', '{"job":{"id":"12"}}', /job\.id/],
    ['a negative job id', '{"job":{"id":-1}}', /job\.id/],
  ])('rejects a payload that is %s', (_name, body, reason) => {
    const parsed = parseJobPayload(encode(body));
    expect(parsed.kind).toBe('rejected');
    expect(parsed.kind === 'rejected' && parsed.reason).toMatch(reason);
  });

  it('rejects invalid UTF-8 and oversized payloads without parsing them', () => {
    const invalid = Buffer.concat([Buffer.from('{"job":{"id":1},"x":"'), Buffer.from([0xc3, 0x28]), Buffer.from('"}')]);
    expect(parseJobPayload(invalid)).toEqual({ kind: 'rejected', reason: 'payload is not valid UTF-8' });
    const parsed = parseJobPayload(encode({ job: { id: 1 }, pad: 'x'.repeat(100) }), 50);
    expect(parsed.kind === 'rejected' && parsed.reason).toMatch(/over the 50-byte limit/);
  });

  // 3 000 000 s in ms overflows a Node.js timer, which then fires after 1 ms: the job would be killed before its first line.
  it.each(['hard_limit', 'log_silence'])('errors a job whose timeouts.%s is longer than a timer can wait, naming the field', (field) => {
    const parsed = parseJobPayload(encode({ ...travisExample, timeouts: { [field]: 3_000_000 } }));
    expect(parsed.kind).toBe('ok');
    if (parsed.kind !== 'ok') return;
    expect(parsed.payload.invalid?.field).toBe(`timeouts.${field}`);
    expect(parsed.payload.invalid?.message).toMatch(new RegExp(`^invalid job payload: timeouts\\.${field}: must be at most 2147483.647 seconds`));
    const longest = parseJobPayload(encode({ ...travisExample, timeouts: { [field]: 2_147_483 } }));
    expect(longest.kind === 'ok' && longest.payload.invalid).toBe(undefined);
  });

  // 4000 levels in 8 KB overflowed the stack once a build API was configured, and the job was requeued for ever.
  it('rejects a payload nested deeper than MAX_PAYLOAD_NESTING, counting brackets outside strings only', () => {
    const nested = (levels: number): string => `${'['.repeat(levels)}${']'.repeat(levels)}`;
    const deep = Buffer.from(`{"job":{"id":1},"config":{"x":${nested(4000)}}}`);
    expect(parseJobPayload(deep)).toEqual({ kind: 'rejected', reason: `payload nests deeper than ${MAX_PAYLOAD_NESTING} levels` });
    // The payload object and `config` are two levels; the array fills the rest exactly.
    const deepest = Buffer.from(`{"job":{"id":1},"config":{"x":${nested(MAX_PAYLOAD_NESTING - 2)}}}`);
    expect(parseJobPayload(deepest).kind).toBe('ok');
    const quoted = Buffer.from(`{"job":{"id":1},"config":{"x":"${'[{'.repeat(4000)}\\"["}}`);
    expect(parseJobPayload(quoted).kind).toBe('ok');
  });

  it('names the mistyped field of a job it can still report', () => {
    const parsed = parseJobPayload(encode({ ...travisExample, timeouts: { hard_limit: 'soon' } }));
    expect(parsed.kind).toBe('ok');
    if (parsed.kind !== 'ok') return;
    expect(parsed.payload.jobId).toBe(721270);
    expect(parsed.payload.invalid?.field).toBe('timeouts.hard_limit');
    expect(parsed.payload.invalid?.message).toMatch(/^invalid job payload: timeouts\.hard_limit: /);
  });
});
