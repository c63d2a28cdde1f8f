/**
 * A build API for tests (docs/protocol.md, "The build API"), on loopback: answers
 * each job's POST with the script set for its job id, and keeps every
 * request so tests can check what the worker sent.
 */
import { once } from 'node:events';
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface BuildApiRequest {
  url: string;
  authorization: string | undefined;
  body: Record<string, unknown>;
}

export interface FakeBuildApi {
  /** `http://<token>@127.0.0.1:<port>/script`, for TRAVIS_WORKER_BUILD_API_URI. */
  uri: string;
  /** The script each job id gets; a job without one gets `fallback`. */
  scripts: Map<number, string>;
  requests: BuildApiRequest[];
  close(): void;
}

async function readBody(request: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of request) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

export async function startBuildApi(
  token = 'token',
  fallback: (jobId: number) => string = () => 'echo no script for this job; exit 2',
): Promise<FakeBuildApi> {
  const scripts = new Map<number, string>();
  const requests: BuildApiRequest[] = [];
  const server = createServer((request, response) => {
    void readBody(request).then((text) => {
      requests.push({ url: request.url ?? '', authorization: request.headers.authorization, body: JSON.parse(text) as Record<string, unknown> });
      const jobId = Number(new URL(request.url ?? '/', 'http://x').searchParams.get('job_id'));
      response.end(scripts.get(jobId) ?? fallback(jobId));
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    uri: `http://${token}@127.0.0.1:${(server.address() as AddressInfo).port}/script`,
    scripts,
    requests,
    close: () => server.close(),
  };
}
