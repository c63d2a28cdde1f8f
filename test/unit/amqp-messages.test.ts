import { describe, expect, it } from 'vitest';
import { MAX_CANCEL_TEXT_BYTES, parseCancelCommand } from '../../src/queue/amqp/canceller.js';
import { BrokerError, isConsumerTimeout, isUnknownExchangeType } from '../../src/queue/amqp/errors.js';
import { logPartBody, publishOptions, rfc3339, stateUpdateBody } from '../../src/queue/amqp/messages.js';
import { connectTarget } from '../../src/queue/amqp/uri.js';

function closeError(code: number, message: string): Error {
  return Object.assign(new Error(message), { code });
}

describe('state update bodies', () => {
  it('carry only what is known, in travis order, timestamps without fractions', () => {
    const body = stateUpdateBody({
      jobId: 721270,
      state: 'started',
      count: 3,
      instanceId: 'i-1',
      uuid: 'u-1',
      queuedAt: new Date('2018-05-14T14:26:50.123Z'),
      receivedAt: new Date('2018-05-14T14:27:00.999Z'),
      startedAt: new Date('2018-05-14T14:28:01Z'),
      trace: false,
    });
    expect(body.toString()).toBe(
      '{"id":721270,"state":"started","meta":{"state_update_count":3,"instance_id":"i-1","uuid":"u-1"},' +
        '"queued_at":"2018-05-14T14:26:50Z","received_at":"2018-05-14T14:27:00Z","started_at":"2018-05-14T14:28:01Z"}',
    );
  });

  it('add vm_size and trace only when set', () => {
    const plain = JSON.parse(stateUpdateBody({ jobId: 1, state: 'received', count: 0, trace: false }).toString());
    expect(plain).toEqual({ id: 1, state: 'received', meta: { state_update_count: 0 } });
    const traced = JSON.parse(stateUpdateBody({ jobId: 1, state: 'reset', count: 2, vmSize: 'large', trace: true }).toString());
    expect(traced).toEqual({ id: 1, state: 'reset', meta: { state_update_count: 2 }, vm_size: 'large', trace: true });
  });

  it('formats RFC 3339 in UTC', () => {
    expect(rfc3339(new Date(Date.UTC(2020, 0, 2, 3, 4, 5, 678)))).toBe('2020-01-02T03:04:05Z');
  });
});

describe('log part bodies', () => {
  it('use the key order of travis, meta last and only when given', () => {
    expect(logPartBody(5, 'u', { number: 0, content: 'hi\r\n', final: false }).toString()).toBe(
      '{"id":5,"log":"hi\\r\\n","number":0,"uuid":"u","final":false}',
    );
    expect(logPartBody(5, 'u', { number: 1, content: '', final: true, meta: { queued_at: null, repo: 'o/r', queue: '', infra: 'gce' } }).toString()).toBe(
      '{"id":5,"log":"","number":1,"uuid":"u","final":true,"meta":{"queued_at":null,"repo":"o/r","queue":"","infra":"gce"}}',
    );
  });
});

describe('publish options', () => {
  it('are JSON, persistent, stamped in seconds and typed', () => {
    expect(publishOptions('job:test:log', new Date(1_500_000_000_999))).toEqual({
      contentType: 'application/json',
      deliveryMode: 2,
      timestamp: 1_500_000_000,
      type: 'job:test:log',
    });
  });
});

describe('cancel commands', () => {
  it('accept numeric and decimal-string job ids, defaulting reason and source', () => {
    expect(parseCancelCommand(Buffer.from('{"type":"cancel_job","job_id":123,"source":"api","reason":"by user"}'))).toEqual({
      ok: true,
      command: { jobId: 123, reason: 'by user', source: 'api' },
    });
    expect(parseCancelCommand(Buffer.from('{"type":"cancel_job","job_id":"42"}'))).toEqual({
      ok: true,
      command: { jobId: 42, reason: '', source: '' },
    });
  });

  // Ten cancels with 20 MB reasons were kept whole for an hour and written whole to a job log.
  it('cut a reason or source longer than MAX_CANCEL_TEXT_BYTES between characters, marking the cut', () => {
    const huge = '€'.repeat(100_000);
    const parsed = parseCancelCommand(Buffer.from(JSON.stringify({ type: 'cancel_job', job_id: 5, reason: huge, source: `api${huge}` })));
    expect(parsed.ok).toBe(true);
    if (!parsed.ok) return;
    expect(parsed.command.jobId).toBe(5);
    expect(Buffer.byteLength(parsed.command.reason)).toBeLessThanOrEqual(MAX_CANCEL_TEXT_BYTES);
    expect(parsed.command.reason).toBe(`${'€'.repeat(340)}…`);
    expect(parsed.command.source).toMatch(/^api€+…$/);
    expect(Buffer.byteLength(parsed.command.source)).toBeLessThanOrEqual(MAX_CANCEL_TEXT_BYTES);
    const exact = 'r'.repeat(MAX_CANCEL_TEXT_BYTES);
    expect(parseCancelCommand(Buffer.from(JSON.stringify({ type: 'cancel_job', job_id: 5, reason: exact })))).toMatchObject({ ok: true, command: { reason: exact } });
  });

  it.each([
    ['not json', '(body)'],
    ['{"type":"restart","job_id":1}', 'type'],
    ['{"type":"cancel_job","job_id":0}', 'job_id'],
    ['{"type":"cancel_job","job_id":1.5}', 'job_id'],
    ['{"type":"cancel_job","job_id":"abc"}', 'job_id'],
    ['{"type":"cancel_job"}', 'job_id'],
    ['{"type":"cancel_job","job_id":1,"reason":7}', 'reason'],
    ['[1]', '(body)'],
  ])('reject %s naming %s', (text, field) => {
    const parsed = parseCancelCommand(Buffer.from(text));
    expect(parsed.ok).toBe(false);
    if (!parsed.ok) expect(parsed.field).toBe(field);
  });
});

describe('broker error classification', () => {
  it('recognises the consumer_timeout channel close', () => {
    const timeout = closeError(
      406,
      'Channel closed by server: 406 (PRECONDITION-FAILED) with message "PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed out. Timeout value used: 1800000 ms. This timeout value can be configured, see consumers doc guide to learn more"',
    );
    expect(isConsumerTimeout(timeout)).toBe(true);
    expect(isConsumerTimeout(closeError(406, 'PRECONDITION_FAILED - unknown delivery tag 1'))).toBe(false);
    expect(isConsumerTimeout(undefined)).toBe(false);
  });

  it('recognises an unknown exchange type', () => {
    expect(isUnknownExchangeType(closeError(503, `Connection closed: 503 (COMMAND-INVALID) with message "COMMAND_INVALID - unknown exchange type 'x-modulus-hash'"`))).toBe(true);
    expect(isUnknownExchangeType(closeError(406, 'inequivalent arg'))).toBe(false);
  });

  it('keeps code and cause', () => {
    const cause = new Error('x');
    const err = new BrokerError('lost', 'closed', { cause });
    expect(err).toMatchObject({ code: 'E_BROKER', kind: 'closed', requeue: true, cause });
  });
});

describe('broker URIs', () => {
  it('carry the heartbeat in seconds and the connection name', () => {
    const target = connectTarget('amqp://u:p@host/vh?frameMax=8192', { heartbeatMs: 10_000, insecure: false, connectionName: 'mayfly h 1' });
    const url = new URL(target.url);
    expect(url.searchParams.get('heartbeat')).toBe('10');
    expect(url.searchParams.get('frameMax')).toBe('8192');
    expect(url.password).toBe('p');
    expect(target.socketOptions.clientProperties).toEqual({ connection_name: 'mayfly h 1' });
    expect(target.socketOptions.ca).toBeUndefined();
  });

  it('trust the given certificate on amqps', () => {
    const strict = connectTarget('amqps://h/', { heartbeatMs: 0, tlsCert: 'PEM', insecure: false, connectionName: 'n' });
    expect(strict.socketOptions).toMatchObject({ ca: ['PEM'], rejectUnauthorized: true });
    const insecure = connectTarget('amqps://h/', { heartbeatMs: 0, insecure: true, connectionName: 'n' });
    expect(insecure.socketOptions).toMatchObject({ rejectUnauthorized: false });
    expect(new URL(insecure.url).searchParams.get('heartbeat')).toBe('0');
  });
});
