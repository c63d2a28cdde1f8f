import { z } from 'zod';
import { describe, expect, it } from 'vitest';
import { CloudApi, CloudCallError, MALFORMED_RETRIES } from '../../src/backend/cloud-api.js';
import { MalformedAnswerError, checkAnswer, describeBody, redactSecrets } from '../../src/backend/malformed-answer.js';
import { testBackendContext } from '../helpers/backend-context.js';

const never = new AbortController().signal;

describe('describeBody', () => {
  it('says what a body is: empty, an HTML page by its title, or an excerpt cut short', () => {
    expect(describeBody('  \n', 'text/xml')).toBe('an empty body');
    expect(describeBody('<!DOCTYPE html><html><head><title>\n 502 Bad Gateway </title></head><body>x</body></html>', 'text/html; charset=utf-8')).toBe(
      'an HTML page (text/html, 88 bytes) titled "502 Bad Gateway"',
    );
    expect(describeBody(`upstream connect error ${'x'.repeat(200)}`, undefined)).toBe(
      `223 bytes of no content type: "upstream connect error ${'x'.repeat(57)}…"`,
    );
  });

  it('never repeats a credential a proxy echoed back', () => {
    const echoed = [
      'Authorization: AWS4-HMAC-SHA256 Credential=AKIAFAKEMAYFLYTEST01/20261122/eu-west-1/ec2/aws4_request, SignedHeaders=host, Signature=0123abcd',
      'Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ4In0.c2lnbmF0dXJl',
      'X-Amz-Security-Token: FQoGZXIvYXdzE token=abc password: hunter2',
    ].join('\n');
    const redacted = redactSecrets(echoed);
    for (const secret of ['AKIAFAKEMAYFLYTEST01', '0123abcd', 'eyJ', 'FQoGZXIvYXdzE', 'abc', 'hunter2']) expect(redacted).not.toContain(secret);
    expect(redacted).toContain('Signature=[redacted]');
    expect(redacted).toContain('Bearer [redacted]');
    expect(describeBody(echoed, 'text/plain')).not.toMatch(/AKIA|Signature=0/);
  });
});

describe('checkAnswer', () => {
  const schema = z.object({ name: z.string(), items: z.array(z.object({ id: z.number() })) });

  it('returns the answer itself when it fits', () => {
    const answer = { name: 'x', items: [{ id: 1 }], extra: true };
    expect(checkAnswer(schema, answer, 'the list')).toBe(answer);
  });

  it('names the fields at fault, at most three, as a wrong shape', () => {
    const error = (() => {
      try {
        checkAnswer(schema, { items: [{ id: 'a' }, {}, { id: null }] }, 'the list');
      } catch (err) {
        return err;
      }
      return undefined;
    })();
    expect(error).toBeInstanceOf(MalformedAnswerError);
    expect(error).toMatchObject({ problem: 'wrong-shape', kind: 'fatal' });
    expect((error as Error).message).toBe(
      'the list is not what the API sends: name: missing; items[0].id: Invalid input: expected number, received string; items[1].id: missing; and 1 more',
    );
  });
});

describe('CloudApi and malformed answers', () => {
  function api(): CloudApi {
    const context = testBackendContext();
    return new CloudApi({ backend: 'test', maxCalls: 0, intervalMs: 1000, classify: () => 'fatal', metrics: context.metrics, logger: context.logger, minDelayMs: 1, maxDelayMs: 2 });
  }

  it(`asks again after a garbled answer, ${MALFORMED_RETRIES} times at most`, async () => {
    let calls = 0;
    const garbled = async (): Promise<string> => {
      calls += 1;
      throw new MalformedAnswerError('garbled', 'the answer has an empty body');
    };
    const error = await api().call('op', garbled, never).catch((err: unknown) => err);
    expect(error).toBeInstanceOf(CloudCallError);
    expect((error as CloudCallError).kind).toBe('malformed');
    expect((error as Error).message).toBe('op failed (malformed): the answer has an empty body');
    expect(calls).toBe(1 + MALFORMED_RETRIES);
  });

  it('does not ask again after an answer of the wrong shape', async () => {
    let calls = 0;
    const wrong = async (): Promise<string> => {
      calls += 1;
      throw new MalformedAnswerError('wrong-shape', 'the list is not what the API sends: name: missing');
    };
    await expect(api().call('op', wrong, never)).rejects.toMatchObject({ kind: 'fatal' });
    expect(calls).toBe(1);
  });
});
