/**
 * The amqp queue passes the queue conformance suite against the real broker,
 * in a vhost of its own. What it reported is read back from the reporting
 * queues by the job ledger; rejected deliveries from a dead-letter queue.
 */
import { randomBytes } from 'node:crypto';
import { silentLogger } from '../../src/logger.js';
import { AmqpJobQueue } from '../../src/queue/amqp/queue.js';
import type { JobState } from '../../src/queue/contract.js';
import { startLedger } from '../helpers/job-ledger.js';
import { closeConnections, connectionNames, createVhost, drain, publishRaw, routeDeadLetters, testAmqpConfig } from '../helpers/rabbitmq.js';
import { describeQueueConformance } from './queue-conformance.js';

const DEAD_LETTERS = 'dead';
const PAYLOAD_MAX_BYTES = 1024 * 1024;
/** How long the reader waits for its own markers to come back through the reporting queues. */
const READ_WAIT_MS = 10_000;

describeQueueConformance('amqp', { commands: true, connectionLoss: true }, async () => {
  const vhost = await createVhost();
  await routeDeadLetters(vhost, '^builds\\.', DEAD_LETTERS);
  /** Each job's queue and body as published, for the hub's stand-in to put it back after `reset`. */
  const published = new Map<number, { queueName: string; text: string }>();
  const ledger = await startLedger(vhost.uri, {
    onReset: async (jobId) => {
      const job = published.get(jobId);
      if (!job) throw new Error(`job ${jobId} was never published`);
      await publishRaw(vhost.uri, '', job.queueName, job.text);
    },
  });

  return {
    async target() {
      const tag = randomBytes(4).toString('hex');
      const queueName = `builds.conformance-${tag}`;
      // The connections' names start with it: what the test closes and counts is this test's only.
      const hostname = `conformance-${tag}`;
      const config = testAmqpConfig(vhost.uri);
      return {
        createQueue: () => new AmqpJobQueue({ config, queueName, logger: silentLogger, payloadMaxBytes: PAYLOAD_MAX_BYTES, hostname }),
        async publish(body) {
          const text = typeof body === 'string' ? body : JSON.stringify(body);
          const jobId = typeof body === 'string' ? undefined : (body.job as { id: number }).id;
          if (jobId !== undefined) published.set(jobId, { queueName, text });
          await publishRaw(vhost.uri, '', queueName, text);
        },
        reader: {
          async lastState(jobId) {
            await ledger.settled(AbortSignal.timeout(READ_WAIT_MS));
            return ledger.states(jobId).at(-1) as JobState | undefined;
          },
          async log(jobId) {
            await ledger.settled(AbortSignal.timeout(READ_WAIT_MS));
            return ledger.log(jobId);
          },
          async rejected(count, signal) {
            return (await drain(vhost.uri, DEAD_LETTERS, count, signal)).map((message) => message.text);
          },
        },
        async leftovers() {
          return (await connectionNames(vhost.name, `mayfly ${hostname} `)).map((name) => `connection "${name}" still open`);
        },
        async sendCancel(command) {
          const body = { type: 'cancel_job', job_id: command.jobId, source: command.source, reason: command.reason };
          await publishRaw(vhost.uri, 'worker.commands', '', JSON.stringify(body));
        },
        async interrupt() {
          if ((await closeConnections(vhost.name, `mayfly ${hostname} `)) === 0) throw new Error('no connection of the queue to close');
        },
      };
    },
    async close() {
      await ledger.close();
      await vhost.delete();
    },
  };
});
