/**
 * A whole worker on RabbitMQ for one test file or describe block: its own
 * vhost (made before the tests, deleted after), the worker stopped and the
 * queues emptied after each test. Register it after any afterEach hook that
 * must run once the worker is stopped (after hooks run last-in first-out).
 */
import { afterAll, afterEach, beforeAll } from 'vitest';
import type { Logger } from '../../src/logger.js';
import { createVhost, purge, type TestVhost } from './rabbitmq.js';
import { startTestWorker, type TestWorker } from './worker.js';

export interface AmqpWorkerFixture {
  /** This block's vhost; there from its beforeAll on. */
  readonly vhost: TestVhost;
  /** Start a worker consuming `queue` on the vhost, configured further by `env`; stopped after the test. */
  start(env: Record<string, string>, logger?: Logger): Promise<TestWorker>;
}

export function useAmqpWorker(queue: string): AmqpWorkerFixture {
  let vhost: TestVhost | undefined;
  let worker: TestWorker | undefined;
  beforeAll(async () => {
    vhost = await createVhost();
  });
  afterAll(async () => {
    await vhost?.delete();
  });
  afterEach(async () => {
    await worker?.stop();
    worker = undefined;
    if (vhost) await purge(vhost.uri, queue, 'reporting.jobs.builds', 'reporting.jobs.logs');
  });
  const fixture: AmqpWorkerFixture = {
    get vhost(): TestVhost {
      if (!vhost) throw new Error('the vhost is made in beforeAll: use it inside a test');
      return vhost;
    },
    async start(env, logger) {
      worker = await startTestWorker(
        { TRAVIS_WORKER_QUEUE_TYPE: 'amqp', TRAVIS_WORKER_AMQP_URI: fixture.vhost.uri, TRAVIS_WORKER_QUEUE_NAME: queue, ...env },
        logger,
      );
      return worker;
    },
  };
  return fixture;
}
