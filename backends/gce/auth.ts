/**
 * Credentials for the Compute API: the service-account key of
 * `ACCOUNT_JSON` (a path or the JSON text), else application default
 * credentials (the worker VM's own service account on GCE).
 */
import { readFileSync } from 'node:fs';
import type { JWT } from 'google-auth-library';
import { invalidJsonProblem } from '../../src/backend/kit.js';

export const COMPUTE_SCOPE = 'https://www.googleapis.com/auth/compute';

interface ServiceAccountKey {
  client_email: string;
  private_key: string;
  private_key_id?: string;
}

/**
 * The key's JSON text: `value` itself when it looks like JSON, else the file
 * it names. No message repeats `value` or quotes the text: either may be the
 * key itself (base64 of it, or JSON missing its opening brace).
 */
function keyText(value: string): string {
  if (value.trim().startsWith('{')) return value;
  try {
    return readFileSync(value, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'unreadable';
    throw new Error(`is neither JSON text (starting with "{") nor the path of a readable file (${code})`);
  }
}

/** The key of ACCOUNT_JSON; throws an `Error` that quotes neither the setting nor the key. */
export function parseAccountJson(value: string): ServiceAccountKey {
  const text = keyText(value);
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new Error(`is ${invalidJsonProblem(err)}`);
  }
  const key = parsed as Partial<ServiceAccountKey> | null;
  if (typeof key?.client_email !== 'string' || typeof key.private_key !== 'string') {
    throw new Error(`is not a service-account key (client_email and private_key are required)`);
  }
  return { client_email: key.client_email, private_key: key.private_key, ...(typeof key.private_key_id === 'string' ? { private_key_id: key.private_key_id } : {}) };
}

/**
 * A JWT client that signs its own short-lived tokens with the key, scoped to
 * Compute (Google's "self-signed JWT with scope"): no round trip to the
 * OAuth token endpoint before the first call, and no dependency on it
 * being reachable. Undefined when `ACCOUNT_JSON` is empty (the SDK then
 * uses application default credentials). The key was checked at load
 * (`validateSettings`); the auth library itself is loaded on first use, like
 * the SDK, so workers on other backends don't pay for it.
 */
export function authClientFor(accountJson: string): (() => Promise<JWT>) | undefined {
  if (accountJson.trim() === '') return undefined;
  const key = parseAccountJson(accountJson);
  return async () => {
    const { JWT: JwtClient } = await import('google-auth-library');
    const client = new JwtClient({
      email: key.client_email,
      key: key.private_key,
      ...(key.private_key_id === undefined ? {} : { keyId: key.private_key_id }),
      scopes: [COMPUTE_SCOPE],
    });
    client.useJWTAccessWithScope = true;
    return client;
  };
}
