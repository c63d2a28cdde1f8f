/**
 * One job, start to end (docs/failure-modes.md, "How a job runs").
 *
 *   received -> script -> start instance -> upload -> started -> worker info
 *   -> run under a PTY -> terminal state -> instance destroyed -> ack
 *
 * Every step runs under the job's stop signal (shutdown, cancel, hard
 * timeout, log silence, max log length) and its own timeout. Whatever
 * happens, exactly one of finish/requeue is published (unless the delivery
 * itself is lost), the instance is destroyed, and the delivery is settled.
 *
 * Each job is one trace (a `job` span with a child span per step: received,
 * script, start, upload, started, run, finish or requeue, destroy) and feeds
 * the worker's metrics; both are no-ops unless the worker turned them on.
 */
import { context, trace, SpanStatusCode, type Attributes, type Tracer } from '@opentelemetry/api';
import type { Backend, Instance } from '../backend/contract.js';
import type { WorkerConfig } from '../config/types.js';
import {
  StartupTimeoutError,
  UploadTimeoutError,
  errorMessage,
  isMayflyError,
} from '../errors.js';
import type { Logger } from '../logger.js';
import { LogWriter, fold } from '../job-log/writer.js';
import type { QueuedJob, TerminalState } from '../queue/contract.js';
import { destroyInstance } from '../backend/destroy.js';
import type { CancelRegistry } from './cancels.js';
import type { RequeueCounter } from './requeues.js';
import type { ScriptGenerator } from './script.js';
import { startAttributesOf } from './start-attributes.js';
import { JobStopController, outcomeOf, stepSignal, type StopReason } from './stop.js';
import { abortableSleep } from '../util/abort.js';
import { noopMetrics, type JobMetrics } from '../telemetry/metrics.js';
import { noopTracer } from '../telemetry/tracing.js';

export interface JobRunnerDeps {
  config: WorkerConfig;
  backend: Backend;
  scripts: ScriptGenerator;
  cancels: CancelRegistry;
  /** Requeues per job id: past its limit a job is errored instead of requeued again. */
  requeues: RequeueCounter;
  /** Aborts when the worker stops: running jobs are requeued. */
  shutdown: AbortSignal;
  logger: Logger;
  /** `mayfly <version>`, for the worker-info fold. */
  version: string;
  /** How the job came in (`amqp`, `file`), for the worker-info fold. */
  queueType: string;
  /** Where the job's metrics go; nothing is recorded when absent. */
  metrics?: JobMetrics;
  /** Makes the job's trace; spans are dropped when absent. */
  tracer?: Tracer;
  /** Called once the job's instance has started and taken its script: the circuit breaker counts it as a working start. */
  onInstanceReady?: () => void;
}

/** How a job ended, for the processor's bookkeeping and the worker log. */
export type JobResult =
  | { outcome: 'finished'; state: TerminalState }
  | { outcome: 'requeued'; reason: string }
  | { outcome: 'abandoned'; reason: string };

/** Exit status -> state, as travis: 0 passed, 1 failed, anything else (or a signal) errored. */
export function stateOfExit(exitCode: number | null): TerminalState {
  if (exitCode === 0) return 'passed';
  if (exitCode === 1) return 'failed';
  return 'errored';
}

function describeStop(reason: StopReason): string {
  return reason.kind === 'cancelled' ? `cancelled: ${reason.reason}` : reason.kind;
}

export async function runJob(job: QueuedJob, processorId: string, deps: JobRunnerDeps): Promise<JobResult> {
  const { config, backend } = deps;
  const payload = job.payload;
  const logger = deps.logger.child({
    job_id: payload.jobId,
    processor: processorId,
    backend: config.providerName,
    repository: payload.repositorySlug,
  });
  const hardTimeoutMs = payload.hardLimitMs ?? config.timeouts.hardMs;
  const silenceMs = payload.logSilenceMs ?? config.timeouts.logSilenceMs;
  const metrics = deps.metrics ?? noopMetrics;
  const tracer = deps.tracer ?? noopTracer;
  const takenAt = Date.now();
  if (payload.queuedAt) metrics.queueWait(takenAt - payload.queuedAt.getTime());
  const jobAttributes: Attributes = {
    'job.id': payload.jobId,
    'job.repository': payload.repositorySlug,
    'worker.backend': config.providerName,
    'worker.processor': processorId,
  };
  const root = tracer.startSpan('job', { attributes: jobAttributes });
  const traceContext = trace.setSpan(context.active(), root);
  /** Run one step of the job under a span of its own. */
  async function step<T>(name: string, work: () => Promise<T>): Promise<T> {
    const span = tracer.startSpan(name, { attributes: jobAttributes }, traceContext);
    try {
      return await work();
    } catch (err) {
      span.recordException(err instanceof Error ? err : new Error(errorMessage(err)));
      span.setStatus({ code: SpanStatusCode.ERROR, message: errorMessage(err) });
      throw err;
    } finally {
      span.end();
    }
  }
  // Counted at the sink, so parts of every kind (final, requeue flush) are seen once.
  const countedSink = {
    publish: async (part: Parameters<typeof job.log.publish>[0]) => {
      await job.log.publish(part);
      metrics.logPart(Buffer.byteLength(part.content));
    },
    flushed: () => job.log.flushed(),
  };

  const stop = new JobStopController();
  const unlinkShutdown = stop.stopWhen(deps.shutdown, { kind: 'shutdown' });
  const unlinkLost = stop.stopWhen(job.lost, { kind: 'delivery-lost' });
  const unlinkLogFailed = job.log.failed ? stop.stopWhen(job.log.failed, { kind: 'log-undeliverable' }) : () => {};
  const unsubscribeCancel = deps.cancels.subscribe(payload.jobId, (command) =>
    stop.stop({ kind: 'cancelled', reason: command.reason }),
  );
  const log = new LogWriter({
    sink: countedSink,
    maxLogBytes: config.maxLogLength,
    silenceTimeoutMs: silenceMs,
    onSilence: () => stop.stop({ kind: 'log-silence', limitMs: silenceMs }),
    onMaxLength: () => stop.stop({ kind: 'max-log-length', limitBytes: config.maxLogLength }),
  });

  let instance: Instance | undefined;
  let result: JobResult;
  logger.info('job received');
  try {
    await step('received', () => job.received());
    metrics.timeToReceived(Date.now() - takenAt);
    result = await runSteps();
  } catch (err) {
    result = await endAfterError(err);
  } finally {
    stop.dispose();
    unlinkShutdown();
    unlinkLost();
    unlinkLogFailed();
    unsubscribeCancel();
  }
  const started = instance;
  if (started) await step('destroy', () => destroyInstance(started, logger));
  if (result.outcome !== 'abandoned') {
    await job.acknowledge().catch((err: unknown) => {
      logger.error({ err: errorMessage(err) }, 'could not acknowledge the delivery; the broker will redeliver it');
    });
  }
  metrics.jobEnded(result.outcome === 'finished' ? result.state : result.outcome === 'requeued' ? 'reset' : 'abandoned');
  root.setAttributes(result.outcome === 'finished' ? { 'job.outcome': result.outcome, 'job.state': result.state } : { 'job.outcome': result.outcome, 'job.reason': result.reason });
  if (result.outcome !== 'finished') root.setStatus({ code: SpanStatusCode.ERROR, message: `${result.outcome}: ${result.reason}` });
  root.end();
  logger.info({ ...result }, 'job done');
  return result;

  async function runSteps(): Promise<JobResult> {
    if (payload.invalid) {
      logger.error({ err: payload.invalid.message }, 'job payload is invalid');
      return finish('errored', `\nThe job could not be run: ${payload.invalid.message}\n`);
    }
    throwIfStopped();
    await abortableSleep(config.timeouts.initialSleepMs, stop.signal);
    const script = await step('script', () => deps.scripts.generate(payload, stop.signal));

    const attributes = startAttributesOf(payload, config.defaults, hardTimeoutMs);
    const startup = stepSignal(stop.signal, config.timeouts.startupMs, () =>
      new StartupTimeoutError(`instance not ready within the startup timeout`, {
        userMessage: `The instance did not start within ${config.timeouts.startupMs / 1000}s.`,
      }),
    );
    try {
      instance = await step('start', () =>
        backend.start(attributes, {
          signal: startup.signal,
          // A failed sink also fails the close that follows; no need to hear of it twice.
          progress: (line) => log.write(`${line}\r\n`).catch(() => {}),
          logger,
          recordPhase: (phase, durationMs) => {
            metrics.bootPhase(phase, durationMs);
            logger.debug({ phase, duration_ms: durationMs }, 'boot phase');
          },
        }),
      );
      root.setAttribute('instance.id', instance.id);
    } catch (err) {
      throw startup.signal.aborted ? startup.signal.reason : err;
    } finally {
      startup.dispose();
    }
    logger.info({ instance: instance.id, startup_ms: instance.startupMs }, 'instance started');

    const upload = stepSignal(stop.signal, config.timeouts.scriptUploadMs, () =>
      new UploadTimeoutError('script upload did not finish within the upload timeout'),
    );
    try {
      const target = instance;
      await step('upload', () => target.upload(script, { signal: upload.signal }));
    } catch (err) {
      throw upload.signal.aborted ? upload.signal.reason : err;
    } finally {
      upload.dispose();
    }
    deps.onInstanceReady?.();
    throwIfStopped();

    const ready = instance;
    await step('started', () => job.started(ready.id));
    metrics.timeToStarted(Date.now() - takenAt);
    log.setStartedMeta({
      ...(payload.queuedAt ? { queued_at: payload.queuedAt.toISOString().replace(/\.\d{3}Z$/, 'Z') } : {}),
      repo: payload.repositorySlug,
      ...(payload.queue ? { queue: payload.queue } : {}),
      infra: config.infra,
    });
    await log.write(workerInfo(instance));

    stop.startHardTimeout(hardTimeoutMs);
    log.watchSilence(true);
    const scriptStart = Date.now();
    const run = await step('run', () => ready.run({ output: log.stream, signal: stop.signal })).finally(() => {
      log.watchSilence(false);
      metrics.scriptRun(Date.now() - scriptStart);
    });
    throwIfStopped();
    logger.info({ exit_code: run.exitCode, signal: run.signal }, 'script exited');
    return finish(stateOfExit(run.exitCode));
  }

  function throwIfStopped(): void {
    if (stop.signal.aborted) throw stop.signal.reason;
  }

  async function finish(state: TerminalState, trailer?: string): Promise<JobResult> {
    return step('finish', async () => {
      await log.close(trailer);
      await job.finish(state);
      deps.requeues.forget(payload.jobId);
      return { outcome: 'finished', state };
    });
  }

  async function requeue(reason: string): Promise<JobResult> {
    if (!deps.requeues.admit(payload.jobId)) {
      const { limit } = deps.requeues;
      logger.error({ reason, requeue_limit: limit }, 'job requeued too many times in a row; ending it errored instead');
      const times = `${limit} time${limit === 1 ? '' : 's'}`;
      return finish('errored', `\n\nThe job was requeued ${times} in a row (the last time for ${reason}) and has been errored instead of being requeued again.\n\n`);
    }
    // The parts written so far stay published; a final part is not, since
    // this run is not the job's last.
    return step('requeue', async () => {
      await log.flush().catch((err: unknown) => logger.warn({ err: errorMessage(err) }, 'could not flush the log'));
      await job.requeue();
      metrics.requeued(reason);
      return { outcome: 'requeued', reason };
    });
  }

  /** Decide the job's end from a stop reason (which wins) or the error thrown. */
  async function endAfterError(err: unknown): Promise<JobResult> {
    const reason = stop.reason;
    try {
      if (reason) {
        const outcome = outcomeOf(reason);
        logger.info({ stop: describeStop(reason) }, 'job stopped');
        if (outcome.action === 'finish') return await finish(outcome.state, outcome.logLine);
        if (outcome.action === 'requeue') return await requeue(reason.kind);
        return { outcome: 'abandoned', reason: reason.kind };
      }
      if (isMayflyError(err) && !err.requeue) {
        logger.error({ err: err.message, code: err.code }, 'job failed');
        return await finish('errored', `\n${err.userMessage ?? err.message}\n`);
      }
      // Infrastructure failures, known or not, are not the job's fault: run it again.
      const code = isMayflyError(err) ? err.code : 'E_UNEXPECTED';
      logger.error({ err: errorMessage(err), code, stack: isMayflyError(err) ? undefined : (err as Error)?.stack }, 'job failed on infrastructure, requeueing');
      return await requeue(code);
    } catch (publishErr) {
      // Neither state could be published (broker gone): leave the delivery
      // unacknowledged so the broker hands the job out again.
      logger.error({ err: errorMessage(publishErr) }, 'could not report the job; leaving it to be redelivered');
      return { outcome: 'abandoned', reason: 'report failed' };
    }
  }

  function workerInfo(started: Instance): string {
    return fold(
      'worker_info',
      [
        '\x1b[33;1mWorker information\x1b[0m',
        `hostname: ${processorId}`,
        `version: ${deps.version}`,
        `instance: ${started.id} ${started.imageName} (via ${deps.queueType})`,
        `startup: ${(started.startupMs / 1000).toFixed(3)}s`,
      ].join('\r\n'),
    );
  }
}
