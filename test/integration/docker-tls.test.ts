/**
 * TLS_VERIFY against a TLS engine endpoint on loopback whose certificate
 * was not issued by CERT_PATH's `ca.pem`: mayfly verifies by default, and
 * the error says which setting restores travis-ci/worker's way (no check
 * unless TLS_VERIFY was set). The certificates are made with openssl; a
 * missing openssl fails the test.
 */
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DockerApi } from '../../backends/docker/api.js';
import { engineAddress } from '../../backends/docker/settings.js';
import { silentLogger } from '../../src/logger.js';

let dir: string;
let server: Server;
let endpoint: string;

/** A self-signed key and certificate for `subject`, written as `<name>.key` / `<name>.pem` in `dir`. */
function selfSigned(name: string, subject: string): void {
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1',
    '-subj', `/CN=${subject}`, '-addext', 'subjectAltName=IP:127.0.0.1',
    '-keyout', join(dir, `${name}.key`), '-out', join(dir, `${name}.pem`),
  ], { stdio: 'ignore' });
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'mayfly-docker-tls-'));
  // CERT_PATH: a CA the engine's certificate does not come from, and a client certificate.
  selfSigned('ca', 'mayfly test CA');
  selfSigned('cert', 'mayfly worker');
  copyFileSync(join(dir, 'cert.key'), join(dir, 'key.pem'));
  selfSigned('engine', '127.0.0.1');
  server = createServer({ key: readFileSync(join(dir, 'engine.key')), cert: readFileSync(join(dir, 'engine.pem')) }, (_request, response) => {
    response.setHeader('content-type', 'application/json');
    response.end(JSON.stringify({ ApiVersion: '1.41' }));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  endpoint = `tcp://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  server.close();
  await once(server, 'close');
  rmSync(dir, { recursive: true, force: true });
});

function api(tlsVerify: boolean): DockerApi {
  return new DockerApi({
    address: engineAddress({ endpoint, host: '', certPath: dir }),
    certPath: dir,
    tlsVerify,
    apiVersion: '',
    metrics: { apiCall: () => {} },
    logger: silentLogger,
  });
}

describe('docker TLS_VERIFY', () => {
  it("verifies by default, and a certificate that does not verify names the setting that restores travis' way", async () => {
    const verifying = api(true);
    try {
      await expect(verifying.version(AbortSignal.timeout(20_000))).rejects.toThrow(
        `the engine's certificate did not verify against ${join(dir, 'ca.pem')}; TRAVIS_WORKER_DOCKER_TLS_VERIFY=false skips the check, as travis-ci/worker did when TLS_VERIFY was unset`,
      );
    } finally {
      await verifying.close();
    }
  });

  it('TLS_VERIFY=false talks to that engine, as travis did', async () => {
    const trusting = api(false);
    try {
      expect(await trusting.version(AbortSignal.timeout(20_000))).toBe('1.41');
    } finally {
      await trusting.close();
    }
  });
});
