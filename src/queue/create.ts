/** Picks the job queue `TRAVIS_WORKER_QUEUE_TYPE` names: the one place that knows every queue type. */
import type { WorkerConfig } from '../config/types.js';
import type { Logger } from '../logger.js';
import { AmqpJobQueue } from './amqp/queue.js';
import type { JobQueue } from './contract.js';
import { FileJobQueue } from './file/queue.js';

export function createQueue(config: WorkerConfig, logger: Logger): JobQueue {
  if (config.queueType === 'file') {
    return new FileJobQueue({
      config: config.file,
      queueName: config.queueName,
      logger,
      payloadMaxBytes: config.payloadMaxBytes,
    });
  }
  return new AmqpJobQueue({
    config: config.amqp,
    queueName: config.queueName,
    logger,
    payloadMaxBytes: config.payloadMaxBytes,
    hostname: config.hostname,
  });
}
