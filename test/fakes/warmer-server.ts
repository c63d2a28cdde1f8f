/**
 * travis' warmer service on loopback, as travis-ci/worker's backend/gce.go
 * talks to it: `POST /request-instance` with the job's zone, image and
 * machine answers with a VM that is already running (planted in a
 * `FakeGce`, with a real sshd of its own) and its SSH key, encrypted with
 * the passphrase (legacy PEM encryption, which Go's x509.DecryptPEMBlock
 * reads). What it answers is set per test: a VM, nothing (it holds the
 * request), an error status, or garbage.
 */
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import ssh2 from 'ssh2';
import type { FakeGce } from './gce-server.js';
import { startSshd, type SshdTarget } from '../helpers/sshd.js';

/** What the warmer does with the next requests. */
export type WarmerBehaviour = 'hit' | 'hold' | 'error' | 'garbage' | 'wrong-key';

export interface WarmerRequestSeen {
  authorization: string | undefined;
  body: Record<string, unknown>;
}

export class FakeWarmer {
  behaviour: WarmerBehaviour = 'hit';
  readonly requests: WarmerRequestSeen[] = [];
  /** The VMs it handed over, by name. */
  readonly handedOver: string[] = [];
  readonly #server: Server;
  readonly #gce: FakeGce;
  readonly #passphrase: string;
  readonly #targets: SshdTarget[] = [];
  readonly #held = new Set<ServerResponse>();

  private constructor(server: Server, gce: FakeGce, passphrase: string) {
    this.#server = server;
    this.#gce = gce;
    this.#passphrase = passphrase;
  }

  static async start(gce: FakeGce, passphrase: string): Promise<FakeWarmer> {
    const server = createServer();
    const warmer = new FakeWarmer(server, gce, passphrase);
    server.on('request', (request: IncomingMessage, response: ServerResponse) => void warmer.#handle(request, response));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    return warmer;
  }

  /** `http://user:secret@127.0.0.1:PORT`, for WARMER_URL. */
  get url(): string {
    return `http://warmer-user:warmer-secret@127.0.0.1:${(this.#server.address() as AddressInfo).port}`;
  }

  async close(): Promise<void> {
    for (const response of this.#held) response.destroy();
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
    await Promise.all(this.#targets.map((target) => target.stop()));
  }

  async #handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of request) chunks.push(chunk as Buffer);
    if (request.method !== 'POST' || request.url !== '/request-instance') {
      response.writeHead(404).end();
      return;
    }
    const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>;
    this.requests.push({ authorization: request.headers.authorization, body });
    switch (this.behaviour) {
      case 'hold':
        this.#held.add(response);
        return;
      case 'error':
        response.writeHead(503).end('{"error":"no instances ready"}');
        return;
      case 'garbage':
        response.writeHead(200, { 'content-type': 'application/json' }).end('{"name": "", "ip": "not an address"}');
        return;
      default:
        response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(await this.#instance(String(body['zone'] ?? ''))));
    }
  }

  /** A running VM in `zone` with an sshd that lets in the key handed over with it. */
  async #instance(zone: string): Promise<Record<string, string>> {
    // Traditional PEM encryption of a PKCS#1 key: what travis' warmer hands out.
    const passphrase = this.behaviour === 'wrong-key' ? `${this.#passphrase}-not` : this.#passphrase;
    const { privateKey } = generateKeyPairSync('rsa', {
      modulusLength: 2048,
      publicKeyEncoding: { type: 'pkcs1', format: 'pem' },
      privateKeyEncoding: { type: 'pkcs1', format: 'pem', cipher: 'aes-128-cbc', passphrase },
    });
    const parsed = ssh2.utils.parseKey(privateKey, passphrase);
    if (parsed instanceof Error) throw parsed;
    const key = Array.isArray(parsed) ? parsed[0] : parsed;
    const publicKey = `${key.type} ${key.getPublicSSH().toString('base64')}`;
    const target = await startSshd({ authorizedKeys: [publicKey], port: 22 });
    this.#targets.push(target);
    const name = `warmed-${randomUUID()}`;
    this.#gce.plant({ name, zone, labels: { warmed: 'true' } });
    this.handedOver.push(name);
    return { name, zone, ip: target.host, public_ip: '', ssh_private_key: privateKey };
  }
}
