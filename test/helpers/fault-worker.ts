/**
 * What a fault scenario on RabbitMQ sets up (test/fault): a worker fixture
 * on its own vhost consuming `queue`, a build API whose every script is
 * FINISHING_SCRIPT, a ledger per test (closed after it, before the worker
 * stops), and a way to publish a job the ledger can follow.
 */
import { afterAll, afterEach, beforeAll } from 'vitest';
import { useAmqpWorker, type AmqpWorkerFixture } from './amqp-worker.js';
import { startBuildApi, type FakeBuildApi } from './build-api.js';
import { FINISHING_SCRIPT, faultPayload } from './fault-jobs.js';
import { startLedger, type JobLedger, type LedgerOptions } from './job-ledger.js';
import { publishRaw } from './rabbitmq.js';

export interface FaultWorkerFixture {
  readonly amqp: AmqpWorkerFixture;
  /** The build API's URI, for TRAVIS_WORKER_BUILD_API_URI. */
  readonly buildApiUri: string;
  /** Start this test's ledger. */
  startLedger(options?: LedgerOptions): Promise<JobLedger>;
  /** Put job `jobId` on the queue as travis' scheduler would. */
  publishJob(jobId: number): Promise<void>;
}

export function useFaultWorker(queue: string): FaultWorkerFixture {
  const amqp = useAmqpWorker(queue);
  let buildApi: FakeBuildApi | undefined;
  let ledger: JobLedger | undefined;
  beforeAll(async () => {
    buildApi = await startBuildApi('token', () => FINISHING_SCRIPT);
  });
  afterEach(async () => {
    await ledger?.close();
    ledger = undefined;
  });
  afterAll(() => {
    buildApi?.close();
  });
  return {
    amqp,
    get buildApiUri() {
      if (!buildApi) throw new Error('the build API starts in beforeAll: use it inside a test');
      return buildApi.uri;
    },
    async startLedger(options) {
      ledger = await startLedger(amqp.vhost.uri, options);
      return ledger;
    },
    publishJob: (jobId) => publishRaw(amqp.vhost.uri, '', queue, faultPayload(queue, jobId)),
  };
}
