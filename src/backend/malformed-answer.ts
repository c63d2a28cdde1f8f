/**
 * Cloud API answers that are not what the API promises, caught where they
 * enter (each backend's API module) so that nothing downstream acts on a
 * half-read answer: polls for an operation that has no name, waits for a
 * state that does not exist, or dials an "IP" that is a sentence.
 *
 * Two problems, retried differently by `CloudApi`:
 * - `garbled`: a success status with a body that is not the API's whole
 *   answer (a proxy's error page, an answer cut short, an empty body). The
 *   next answer may be whole: kind `malformed`, retried a few times.
 * - `wrong-shape`: the API's format, but a field the worker needs is missing
 *   or has a value the API does not have. Asking again gets the same
 *   answer: kind `fatal`, not retried.
 *
 * Messages describe the body (type, size, an HTML page's title, a short
 * excerpt) so the operator can tell a proxy from the API, with anything
 * that looks like a credential cut out: a debugging proxy may echo the
 * request's headers back.
 */
import { isIP } from 'node:net';
import { z } from 'zod';
import type { CloudErrorKind } from './cloud-api.js';

export type MalformedProblem = 'garbled' | 'wrong-shape';

export class MalformedAnswerError extends Error {
  constructor(
    readonly problem: MalformedProblem,
    message: string,
  ) {
    super(message);
    this.name = 'MalformedAnswerError';
  }

  /** How `CloudApi` treats it: a garbled answer is asked for again a few times, a wrong shape is not. */
  get kind(): CloudErrorKind {
    return this.problem === 'garbled' ? 'malformed' : 'fatal';
  }
}

/** Longest excerpt of a body (or a value) that goes into a message, in characters. */
const EXCERPT_CHARS = 80;
/** Shapes of credentials a proxy's page could echo (signatures, tokens, keys), and what each becomes; labels are kept so the reader sees what was cut. */
const SECRETS: readonly (readonly [RegExp, string])[] = [
  [/\b(bearer|basic)\s+[^\s"'<>,;]+/gi, '$1 [redacted]'],
  [/\b(signature|credential|x-amz-security-token|access_token|token|password|secret)(["']?\s*[:=]\s*["']?)[^\s"'<>,;&]+/gi, '$1$2[redacted]'],
  [/\beyJ[\w-]+\.[\w-]+\.[\w-]*/g, '[redacted]'],
  [/\b(?:AKIA|ASIA)[0-9A-Z]{16}\b/g, '[redacted]'],
];

/** `text` with anything that looks like a credential replaced by `[redacted]`. */
export function redactSecrets(text: string): string {
  return SECRETS.reduce((redacted, [pattern, replacement]) => redacted.replace(pattern, replacement), text);
}

function excerpt(text: string): string {
  const flat = redactSecrets(text.replace(/\s+/g, ' ').trim());
  return JSON.stringify(flat.length > EXCERPT_CHARS ? `${flat.slice(0, EXCERPT_CHARS)}…` : flat);
}

/**
 * What a body is, for a message: `an empty body`, `an HTML page (text/html,
 * 152 bytes) titled "502 Bad Gateway"`, or `57 bytes of text/plain: "..."`.
 */
export function describeBody(body: string, contentType: string | undefined): string {
  if (body.trim() === '') return 'an empty body';
  const type = contentType?.split(';')[0]?.trim() || 'no content type';
  const bytes = Buffer.byteLength(body);
  if (/<html[\s>]|<!doctype html/i.test(body)) {
    const title = /<title[^>]*>([^<]*)<\/title>/i.exec(body)?.[1];
    return `an HTML page (${type}, ${bytes} bytes)${title === undefined ? '' : ` titled ${excerpt(title)}`}`;
  }
  return `${bytes} bytes of ${type}: ${excerpt(body)}`;
}

/** A value from an answer, quoted and cut short, for a message. */
export function quoteValue(value: unknown): string {
  return typeof value === 'string' ? excerpt(value) : String(value);
}

/** An address field: an IP address, or empty (no address). */
export const ipAddress = z.string().refine((text) => text === '' || isIP(text) !== 0, {
  error: (issue) => `${quoteValue(issue.input)} is not an IP address`,
});

/** At most this many of a wrong answer's problems are listed. */
const LISTED_PROBLEMS = 3;

function pathOf(path: readonly PropertyKey[]): string {
  const text = path.map((key) => (typeof key === 'number' ? `[${key}]` : `.${String(key)}`)).join('');
  return text.startsWith('.') ? text.slice(1) : text || 'the answer';
}

/**
 * `answer` if it fits `schema`, else a wrong-shape `MalformedAnswerError`
 * naming the fields at fault (`Instances[0].State.Name: unknown state
 * "exploded"`). The answer itself is returned, not zod's copy: the schema
 * checks what the worker relies on, and the caller keeps the SDK's type,
 * narrowed by what the schema guarantees.
 */
export function checkAnswer<T, S extends z.ZodType>(schema: S, answer: T, what: string): T & z.output<S> {
  const result = schema.safeParse(answer, {
    error: (issue) => (issue.code === 'invalid_type' && issue.input === undefined ? 'missing' : undefined),
  });
  if (result.success) return answer as T & z.output<S>;
  const problems = result.error.issues.map((issue) => `${pathOf(issue.path)}: ${issue.message}`);
  const more = problems.length > LISTED_PROBLEMS ? `; and ${problems.length - LISTED_PROBLEMS} more` : '';
  throw new MalformedAnswerError('wrong-shape', `${what} is not what the API sends: ${problems.slice(0, LISTED_PROBLEMS).join('; ')}${more}`);
}
