/**
 * How a secret is shown wherever a value is shown (`--echo-config`,
 * `--list-backend-providers`, log lines, error messages): masked, never in
 * part. URLs follow one rule, for every URL-valued setting (core and
 * backend) and for the URLs the worker dials.
 */

/** Shown instead of a secret's value. */
export const MASK = '********';

/** Shown instead of each secret part of a URL. */
const URL_SECRET_MASK = '****';

/** `scheme://` at the start: without it the text is not a URL we can take apart safely (`user:pw@proxy:3128` parses as scheme `user:`). */
const HAS_SCHEME = /^[a-z][a-z0-9+.-]*:\/\//i;

/**
 * `text` with every part that may be a secret masked: the user name (the
 * build API and heartbeat take a token there), the password, the query
 * (tokens travel there too) and the fragment. Scheme, host, port and path
 * stay, which is what an operator needs to recognise the endpoint. Text that
 * is not a `scheme://` URL is masked whole; empty text stays empty.
 */
export function maskUrl(text: string): string {
  if (text === '') return '';
  if (!HAS_SCHEME.test(text.trim())) return MASK;
  let parsed: URL;
  try {
    parsed = new URL(text.trim());
  } catch {
    return MASK;
  }
  if (parsed.username !== '') parsed.username = URL_SECRET_MASK;
  if (parsed.password !== '') parsed.password = URL_SECRET_MASK;
  if (parsed.search !== '') parsed.search = URL_SECRET_MASK;
  if (parsed.hash !== '') parsed.hash = URL_SECRET_MASK;
  return parsed.href;
}

/** `maskUrl` for each of several comma-separated URLs (the nodes of a RabbitMQ cluster). */
export function maskUrlList(text: string): string {
  return text
    .split(',')
    .map((one) => maskUrl(one.trim()))
    .join(',');
}

/**
 * What went wrong in a `JSON.parse` of secret-bearing text, for a message:
 * `not valid JSON (at character N)`. V8's own message quotes the text
 * around the error, so only the position is kept.
 */
export function invalidJsonProblem(err: unknown): string {
  const match = /at position (\d+)/.exec(err instanceof Error ? err.message : String(err));
  return match === null ? 'not valid JSON' : `not valid JSON (at character ${match[1] as string})`;
}
