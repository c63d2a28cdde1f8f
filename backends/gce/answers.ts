/**
 * What a Compute API answer must hold before the backend acts on it, and
 * how the REST transport's own failures to read one are told apart (see
 * src/backend/malformed-answer.ts for the two problems and their retries).
 *
 * The transport (google-gax "fallback") reads the body as JSON and then
 * converts it to the proto's shape. Its failures, by message:
 * - `JSON.parse` throws a SyntaxError: not JSON (a proxy's page) or cut short;
 * - "Received null response from RPC Get": the body was empty;
 * - "fromProto3JSONToInternalRepresentation: expected an array for field
 *   items": JSON, but not the resource's shape.
 * The first two are garbled; the last is a wrong shape. None of them says
 * the HTTP status: a 5xx with a proxy's page reads the same as a 200.
 */
import { z } from 'zod';
import type { protos } from '@google-cloud/compute';
import { MalformedAnswerError, invalidJsonProblem, ipAddress, quoteValue } from '../../src/backend/kit.js';

type Status<E> = Exclude<keyof E, 'UNDEFINED_STATUS'>;

/** Every status an operation has (the SDK's `Operation.Status`). */
const OPERATION_STATUSES = ['PENDING', 'RUNNING', 'DONE'] as const satisfies readonly Status<typeof protos.google.cloud.compute.v1.Operation.Status>[];

/** Every status an instance has (the SDK's `Instance.Status`); one the API adds later fails the start until the backend knows it. */
const INSTANCE_STATUSES = [
  'PROVISIONING',
  'STAGING',
  'RUNNING',
  'STOPPING',
  'STOPPED',
  'SUSPENDING',
  'SUSPENDED',
  'REPAIRING',
  'TERMINATED',
  'DEPROVISIONING',
  'PENDING',
] as const satisfies readonly Status<typeof protos.google.cloud.compute.v1.Instance.Status>[];

const nonEmpty = z.string().min(1, 'empty');
const status = <T extends readonly [string, ...string[]]>(values: T) =>
  z.enum(values, { error: (issue) => (issue.input === undefined ? 'missing' : `unknown status ${quoteValue(issue.input)}`) });

/** An insert, delete or zone operation: the backend polls it by name until its status is DONE. */
export const OPERATION = z.object({ name: nonEmpty, status: status(OPERATION_STATUSES) });

/** An instance: its status decides the wait, its addresses are dialled. */
export const INSTANCE = z.object({
  status: status(INSTANCE_STATUSES),
  networkInterfaces: z
    .array(
      z.object({
        networkIP: ipAddress.nullish(),
        accessConfigs: z.array(z.object({ natIP: ipAddress.nullish() })).nullish(),
      }),
    )
    .nullish(),
});

/** A list of images: the newest one's `selfLink` goes into the insert. */
export const IMAGES = z.array(z.object({ name: nonEmpty, selfLink: nonEmpty }));

/** `err` (what the SDK threw) as a `MalformedAnswerError` when the transport could not read the answer; anything else unchanged. */
export function unreadableAnswer(err: unknown): unknown {
  if (err instanceof SyntaxError) {
    // The parser's own message quotes the answer around the fault: say where, never what.
    return new MalformedAnswerError('garbled', `the answer is ${invalidJsonProblem(err)}: a proxy's page, or an answer cut short`);
  }
  const message = err instanceof Error ? err.message : '';
  if (/^Received null response from RPC /.test(message)) return new MalformedAnswerError('garbled', 'the answer has an empty body');
  const shape = /^fromProto3JSONToInternalRepresentation: (.*)$|^Received null or malformed response from JSON serializer/.exec(message);
  if (shape) return new MalformedAnswerError('wrong-shape', `the answer is JSON of the wrong shape (${shape[1] ?? message})`);
  return err;
}
