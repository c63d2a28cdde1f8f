/**
 * What an EC2 answer must hold before the backend acts on it (see
 * src/backend/malformed-answer.ts for garbled versus wrong-shape answers
 * and their retries).
 *
 * The SDK parses any XML into whatever fields it finds: an empty body, or
 * another server's XML, reads as an answer with no instances at all, which
 * a wait would take for "not listed yet" and a termination for "gone". So
 * the body of each success is read first (`checkRawAnswer`): it must be the
 * action's own XML document. XML that breaks off then fails the SDK's
 * parser (`unreadableAnswer`), and what parses is checked field by field
 * (the schemas below).
 */
import type { InstanceStateName } from '@aws-sdk/client-ec2';
import { z } from 'zod';
import { MalformedAnswerError, describeBody, ipAddress, quoteValue } from '../../src/backend/kit.js';

/** Every state EC2 gives an instance (the SDK's `InstanceStateName`). */
const STATES = ['pending', 'running', 'shutting-down', 'terminated', 'stopping', 'stopped'] as const satisfies readonly InstanceStateName[];

const instanceId = z.string().regex(/^i-[0-9a-f]{8,17}$/, { error: (issue) => `${quoteValue(issue.input)} is not an instance id` });

/** An instance as RunInstances and DescribeInstances describe it: an id, a state, and addresses that are addresses. */
const INSTANCE = z.object({
  InstanceId: instanceId,
  State: z.object({
    Name: z.enum(STATES, { error: (issue) => (issue.input === undefined ? 'missing' : `unknown state ${quoteValue(issue.input)}`) }),
  }),
  PrivateIpAddress: ipAddress.nullish(),
  PublicIpAddress: ipAddress.nullish(),
});

export const RUN_INSTANCES = z.object({ Instances: z.array(INSTANCE).min(1, 'no instance') });
export const DESCRIBE_INSTANCES = z.object({ Reservations: z.array(z.object({ Instances: z.array(INSTANCE) })) });
export const TERMINATE_INSTANCES = z.object({ TerminatingInstances: z.array(z.object({ InstanceId: instanceId })) });
export const DESCRIBE_IMAGES = z.object({
  Images: z.array(z.object({ ImageId: z.string().regex(/^ami-[0-9a-f]{8,17}$/, { error: (issue) => `${quoteValue(issue.input)} is not an AMI id` }) })),
});

/** The parts of the SDK's HTTP response read here. */
interface RawResponse {
  statusCode: number;
  headers: Record<string, string | undefined>;
  body: unknown;
}

const isSuccess = (response: RawResponse): boolean => response.statusCode >= 200 && response.statusCode < 300;

async function bytesOf(body: unknown): Promise<Buffer> {
  if (body instanceof Uint8Array) return Buffer.from(body);
  if (body === undefined || body === null) return Buffer.alloc(0);
  const chunks: Buffer[] = [];
  for await (const chunk of body as AsyncIterable<Uint8Array>) chunks.push(Buffer.from(chunk));
  return Buffer.concat(chunks);
}

/**
 * For a middleware between the SDK's HTTP handler and its parser: throws a
 * garbled `MalformedAnswerError` when a success's body is not `action`'s
 * XML answer (`<RunInstancesResponse ...>`); else hands the body, read into
 * memory (the parser does the same), on to the parser.
 */
export async function checkRawAnswer<R extends { response: unknown }>(result: R, action: string): Promise<R> {
  const response = result.response as RawResponse;
  if (!isSuccess(response)) return result;
  const body = await bytesOf(response.body);
  response.body = body;
  const text = body.toString('utf8');
  if (!new RegExp(`^\\s*(<\\?xml[^>]*\\?>\\s*)?<${action}Response[\\s>]`).test(text)) {
    const type = Object.entries(response.headers).find(([name]) => name.toLowerCase() === 'content-type')?.[1];
    throw new MalformedAnswerError('garbled', `the answer is ${describeBody(text, type)}, not EC2's ${action} XML`);
  }
  return result;
}

/** `err` (what the SDK threw) as a garbled `MalformedAnswerError` when its parser could not read a success's XML; anything else unchanged. */
export function unreadableAnswer(err: unknown): unknown {
  if (typeof err !== 'object' || err === null) return err;
  const { $responseBodyText: body, $metadata: metadata, message } = err as { $responseBodyText?: unknown; $metadata?: { httpStatusCode?: number }; message?: unknown };
  const status = metadata?.httpStatusCode;
  if (typeof body !== 'string' || status === undefined || status < 200 || status >= 300) return err;
  // "@aws-sdk XML parse error: unexpected end of input.\n  Deserialization error: ..."
  const reason = String(message).split('\n')[0]?.replace(/^@aws-sdk XML parse error: /, '').replace(/\.$/, '');
  return new MalformedAnswerError('garbled', `the answer's XML breaks off or is broken (${reason}) after ${Buffer.byteLength(body)} bytes`);
}
