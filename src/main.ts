/**
 * The composition root: config -> queue -> backend -> pool -> signals.
 * The only module that knows every part; `startWorker` is also what the
 * end-to-end tests run, in-process.
 */
import { EventEmitter } from 'node:events';
import type { BackendDefinition } from './backend/contract.js';
import type { WorkerConfig } from './config.js';
import { ConfigError, errorMessage } from './errors.js';
import type { Logger } from './log.js';
import { AmqpJobQueue } from './amqp/queue.js';
import { CancelRegistry } from './job/cancels.js';
import { runJob, type JobResult } from './job/run-job.js';
import { createScriptGenerator } from './job/script.js';
import { ProcessorPool } from './pool.js';
import type { CancelCommand, JobQueue } from './queue/contract.js';
import { FileJobQueue } from './queue/file.js';
import { VERSION } from './version.js';

/** Emitted after each job is settled (its delivery acknowledged or abandoned). */
export interface JobDone {
  jobId: number;
  processorId: string;
  result: JobResult;
}

export interface WorkerEvents {
  'job-done': [JobDone];
  /** A cancel command arrived: delivered to a running job or remembered for later. */
  cancel: [CancelCommand, 'delivered' | 'remembered'];
}

export interface Worker {
  readonly pool: ProcessorPool;
  readonly events: EventEmitter<WorkerEvents>;
  readonly cancels: CancelRegistry;
  /** Stop taking jobs, requeue the running ones, release everything. Idempotent. */
  stop(): Promise<void>;
  /** Resolves when the worker has stopped, by `stop()` or by a fatal error (rejects then). */
  readonly stopped: Promise<void>;
}

function createQueue(config: WorkerConfig, logger: Logger, onFatal: (err: Error) => void): JobQueue {
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
    onFatal,
  });
}

export async function startWorker(
  config: WorkerConfig,
  backends: readonly BackendDefinition<any>[], // eslint-disable-line @typescript-eslint/no-explicit-any
  logger: Logger,
): Promise<Worker> {
  const definition = backends.find((b) => b.name === config.providerName);
  if (!definition) throw new ConfigError(`TRAVIS_WORKER_PROVIDER_NAME: unknown backend "${config.providerName}"`);

  const shutdown = new AbortController();
  let fail!: (err: Error) => void;
  let finish!: () => void;
  const stopped = new Promise<void>((resolve, reject) => {
    finish = resolve;
    fail = reject;
  });
  let fatal: Error | undefined;

  const queue = createQueue(config, logger, (err) => {
    fatal = err;
    logger.fatal({ err: err.message }, 'lost the job queue; stopping');
    void stop();
  });
  await queue.open();
  const backend = definition.create(config.backendSettings, {
    logger: logger.child({ backend: definition.name }),
    hostname: config.hostname,
    metrics: { apiCall: () => {} },
  });
  const cancels = new CancelRegistry();
  const events = new EventEmitter<WorkerEvents>();
  queue.onCancel((command) => {
    const outcome = cancels.cancel(command);
    logger.info({ job_id: command.jobId, source: command.source, outcome }, 'cancel command');
    events.emit('cancel', command, outcome);
  });

  const scripts = createScriptGenerator(config.buildApi, logger);
  const pool = new ProcessorPool(
    queue,
    async (job, processorId) => {
      const result = await runJob(job, processorId, {
        config,
        backend,
        scripts,
        cancels,
        shutdown: shutdown.signal,
        logger,
        version: `mayfly ${VERSION}`,
        queueType: queue.name,
      });
      events.emit('job-done', { jobId: job.payload.jobId, processorId, result });
      return result;
    },
    logger,
    config.hostname,
  );
  await pool.grow(config.poolSize);
  logger.info(
    { version: VERSION, queue: `${queue.name}:${config.queueName}`, backend: definition.name, pool_size: config.poolSize },
    'worker started',
  );

  let stopping: Promise<void> | undefined;
  function stop(): Promise<void> {
    stopping ??= (async () => {
      logger.info('stopping: no new jobs; running jobs are requeued');
      shutdown.abort();
      await pool.stop();
      await backend.close().catch((err: unknown) => logger.warn({ err: errorMessage(err) }, 'closing the backend failed'));
      await queue.close().catch((err: unknown) => logger.warn({ err: errorMessage(err) }, 'closing the queue failed'));
      logger.info('worker stopped');
      if (fatal) fail(fatal);
      else finish();
    })();
    return stopping;
  }

  return { pool, events, cancels, stop, stopped };
}
