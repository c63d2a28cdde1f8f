/**
 * A bench worker's warm pool, read from its control API: a worker runs in
 * a child process, so there is no event to await across it, and its
 * `GET /worker` is polled.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort } from '../test/helpers/ports.js';
import type { WorkerStatus } from '../src/lifecycle/status.js';

/** Between looks at `/worker` while waiting for the pool to hold ready VMs. */
const STATUS_POLL_MS = 50;
const CONTROL_AUTH = 'bench:bench';

/** A worker's control API, for the settings that open it and for `untilWarm`. */
export interface WarmStatusEndpoint {
  env: Record<string, string>;
  url: string;
}

/** A free loopback port for a worker's control API, and the settings that put it there. */
export async function warmStatusEndpoint(): Promise<WarmStatusEndpoint> {
  const port = await freePort();
  return {
    env: { TRAVIS_WORKER_REMOTE_CONTROLLER_ADDR: `127.0.0.1:${port}`, TRAVIS_WORKER_REMOTE_CONTROLLER_AUTH: CONTROL_AUTH },
    url: `http://127.0.0.1:${port}`,
  };
}

/** Wait until the worker's pool holds at least `count` ready VMs. */
export async function untilWarm(endpoint: WarmStatusEndpoint, count: number, signal: AbortSignal): Promise<void> {
  const authorization = `Basic ${Buffer.from(CONTROL_AUTH).toString('base64')}`;
  for (;;) {
    const answer = await fetch(`${endpoint.url}/worker`, { headers: { authorization }, signal });
    const status = (await answer.json()) as WorkerStatus;
    const idle = (status.warmPool?.shapes ?? []).reduce((sum, shape) => sum + shape.idle.length, 0);
    if (idle >= count) return;
    await sleep(STATUS_POLL_MS, undefined, { signal });
  }
}
