/**
 * travis' warmer service (`TRAVIS_WORKER_GCE_WARMER_URL`): a job whose
 * payload says `warmer: true` asks it for a VM that is already running, as
 * travis-ci/worker's backend/gce.go does (`POST <url>/request-instance`
 * with the zone, image and machine the job would get). The warmer answers
 * with the VM's name, zone, addresses and an SSH key, encrypted (legacy PEM
 * encryption) with `WARMER_SSH_PASSPHRASE`. Any failure (no answer within
 * `WARMER_TIMEOUT`, an error status, an answer that does not read) is the
 * caller's cue to boot a VM of its own.
 */
import { createPrivateKey } from 'node:crypto';
import { z } from 'zod';
import { errorMessage, ipAddress, quoteValue } from '../../src/backend/kit.js';

/** What travis sends: its `warmerRequest`, field for field. */
export interface WarmerRequest {
  site: string;
  zone: string;
  /** The boot image's URL, as the insert would name it. */
  image_name: string;
  /** The machine type's URL, as the insert would name it. */
  machine_type: string;
  public_ip: boolean;
}

/** A VM the warmer handed over: the job's from now on (deleted after it like any other). */
export interface WarmedInstance {
  name: string;
  zone: string;
  /** Where SSH is reached: the public address when asked for and given, else the internal one. */
  address: string;
  /** The decrypted key, PKCS#1 PEM, for SSH. */
  privateKey: string;
}

/** The warmer could not give a VM; `message` says why (never with the key or passphrase). */
export class WarmerError extends Error {
  override readonly name = 'WarmerError';
  /** A VM the warmer handed over that cannot be used (its key does not decrypt): it is the worker's to delete. */
  readonly unusable: { name: string; zone: string } | undefined;

  constructor(message: string, unusable?: { name: string; zone: string }) {
    super(message);
    this.unusable = unusable;
  }
}

/** The VM's name and zone as GCE allows them (RFC 1035 labels), so that nothing else reaches an API path. */
const RESOURCE_NAME = z.string().regex(/^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$/, { error: (issue) => `${quoteValue(issue.input)} is not a GCE resource name` });

const ANSWER = z.object({
  name: RESOURCE_NAME,
  zone: RESOURCE_NAME,
  ip: ipAddress.refine((text) => text !== '', { error: 'is empty' }),
  public_ip: ipAddress.optional(),
  ssh_private_key: z.string().min(1, { error: 'is empty' }),
});

export interface WarmerOptions {
  /** `WARMER_URL`; user and password in it become basic authentication, as in travis. */
  url: string;
  timeoutMs: number;
  passphrase: string;
  /** Connect to the public address when the warmer gives one (`PUBLIC_IP_CONNECT`). */
  publicIpConnect: boolean;
  signal: AbortSignal;
}

/** The URL without its credentials, and the basic-authentication header they make (fetch refuses URLs carrying them). */
function endpoint(url: string): { target: string; headers: Record<string, string> } {
  const parsed = new URL(url);
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (parsed.username !== '' || parsed.password !== '') {
    const user = decodeURIComponent(parsed.username);
    const password = decodeURIComponent(parsed.password);
    headers.authorization = `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
  }
  parsed.username = '';
  parsed.password = '';
  return { target: `${parsed.toString().replace(/\/+$/, '')}/request-instance`, headers };
}

/** Decrypt the key of the VM the warmer handed over; the reason it failed, without the key. */
function decryptKey(pem: string, passphrase: string, vm: { name: string; zone: string }): string {
  try {
    return createPrivateKey({ key: pem, format: 'pem', passphrase }).export({ type: 'pkcs1', format: 'pem' }).toString();
  } catch (err) {
    throw new WarmerError(`the SSH key of ${vm.name} from the warmer could not be decrypted with WARMER_SSH_PASSPHRASE: ${errorMessage(err)}`, vm);
  }
}

/** Ask the warmer for a VM. Throws `WarmerError` saying why when it gives none, or `options.signal.reason`. */
export async function requestWarmedInstance(request: WarmerRequest, options: WarmerOptions): Promise<WarmedInstance> {
  const { target, headers } = endpoint(options.url);
  const signal = AbortSignal.any([options.signal, AbortSignal.timeout(options.timeoutMs)]);
  let text: string;
  try {
    const response = await fetch(target, { method: 'POST', headers, body: JSON.stringify(request), signal });
    text = await response.text();
    if (response.status !== 200) throw new WarmerError(`the warmer answered HTTP ${response.status}, not 200`);
  } catch (err) {
    if (options.signal.aborted) throw options.signal.reason;
    if (err instanceof WarmerError) throw err;
    if (signal.aborted) throw new WarmerError(`the warmer did not answer within ${options.timeoutMs} ms`);
    throw new WarmerError(`could not reach the warmer: ${errorMessage(err)}`);
  }
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new WarmerError("the warmer's answer is not JSON");
  }
  const parsed = ANSWER.safeParse(body, { error: (issue) => (issue.code === 'invalid_type' && issue.input === undefined ? 'missing' : undefined) });
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => `${issue.path.map(String).join('.') || 'the answer'}: ${issue.message}`);
    throw new WarmerError(`the warmer's answer is not what it sends: ${problems.slice(0, 3).join('; ')}`);
  }
  const answer = parsed.data;
  const publicIp = answer.public_ip ?? '';
  return {
    name: answer.name,
    zone: answer.zone,
    address: options.publicIpConnect && publicIp !== '' ? publicIp : answer.ip,
    privateKey: decryptKey(answer.ssh_private_key, options.passphrase, answer),
  };
}
