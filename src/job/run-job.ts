/**
 * One job, start to end (docs/failure-modes.md, "How a job runs").
 *
 *   received -> (payload filter -> script) while the instance starts -> upload -> started -> worker info
 *   -> run under a PTY -> terminal state -> instance destroyed -> ack
 *
 * Every step runs under the job's stop signal (shutdown, cancel, hard
 * timeout, log silence, max log length) and its own deadline (the job's
 * clock, timers.ts). Whatever happens, exactly one of finish/requeue is
 * published (unless the delivery itself is lost), the instance is
 * destroyed, and the delivery is settled. How the run ends is decided in
 * outcome.ts; this carries the decision out.
 * (A little over the usual size: it is the pipeline, one step after another,
 * and reads best in one place.)
 *
 * Each job is one trace (a `job` span with a child span per step: received,
 * script, start, upload, started, run, finish or requeue, destroy) and feeds
 * the worker's metrics; both are no-ops unless the worker turned them on.
 */
import { context, trace, SpanStatusCode, type Attributes, type Tracer } from '@opentelemetry/api';
import type { Backend, Instance } from '../backend/contract.js';
import type { WorkerConfig } from '../config/types.js';
import { errorMessage, isMayflyError } from '../errors.js';
import type { Logger } from '../logger.js';
import { LogWriter } from '../job-log/writer.js';
import type { QueuedJob } from '../queue/contract.js';
import { destroyInstance } from '../backend/destroy.js';
import type { CancelRegistry } from './cancels.js';
import type { RequeueCounter } from './requeues.js';
import type { ScriptGenerator } from './script.js';
import { startAttributesOf } from './start-attributes.js';
import { UNEXPECTED_ERROR_CODE, endOf, endPastRequeueLimit, stateOfExit, type EndDecision, type JobResult } from './outcome.js';
import { JobStopController, type StopReason } from './stop.js';
import { JobClock } from './timers.js';
import { filterPayload } from './payload-filter.js';
import { both } from './overlap.js';
import { START_INSTANCE_FOLD_END, START_INSTANCE_FOLD_START, progressLine, workerInfoFold } from './worker-info.js';
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
  /** The commit of this build (`?` when unknown), for the worker-info fold. */
  revision: string;
  /** How the job came in (`amqp`, `file`), for the worker-info fold. */
  queueType: string;
  /** Where the job's metrics go; nothing is recorded when absent. */
  metrics?: JobMetrics;
  /** Makes the job's trace; spans are dropped when absent. */
  tracer?: Tracer;
  /** Called once the job's instance has started and taken its script: the circuit breaker counts it as a working start. */
  onInstanceReady?: () => void;
  /**
   * Fetch the script first and start the instance after it, as travis
   * does, instead of both at once. Internal: the bench's same-run baseline.
   */
  sequentialStart?: boolean;
}

/** A stop as worker-log fields: the limit that stopped the job goes here, since the job log keeps travis' text without it. */
function describeStop(reason: StopReason): Record<string, unknown> {
  switch (reason.kind) {
    case 'cancelled':
      return { stop: `cancelled: ${reason.reason}` };
    case 'hard-timeout':
    case 'log-silence':
      return { stop: reason.kind, limit_ms: reason.limitMs };
    case 'max-log-length':
      return { stop: reason.kind, limit_bytes: reason.limitBytes };
    default:
      return { stop: reason.kind };
  }
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
  const clock = new JobClock(stop, {
    hardMs: hardTimeoutMs,
    logSilenceMs: payload.logSilenceMs ?? config.timeouts.logSilenceMs,
    startupMs: config.timeouts.startupMs,
    scriptUploadMs: config.timeouts.scriptUploadMs,
  });
  const log = new LogWriter({
    sink: countedSink,
    maxLogBytes: config.maxLogLength,
    onOutput: () => clock.output(),
    onMaxLength: () => stop.stop({ kind: 'max-log-length', limitBytes: config.maxLogLength }),
  });

  let instance: Instance | undefined;
  /** A start stopped because the script failed: it may still resolve (setting `instance`) after the job has been reported. */
  let stoppedStart: Promise<void> | undefined;
  /** Set once the instance started and took its script: a requeue after that is no failed start. */
  let instanceReady = false;
  let result: JobResult;
  logger.info('job received');
  try {
    await step('received', () => job.received());
    metrics.timeToReceived(Date.now() - takenAt);
    result = await runSteps();
  } catch (err) {
    result = await endAfterError(err);
  } finally {
    clock.dispose();
    unlinkShutdown();
    unlinkLost();
    unlinkLogFailed();
    unsubscribeCancel();
  }
  await stoppedStart;
  const started = instance;
  if (started) await step('destroy', () => destroyInstance(started, logger));
  if (result.outcome !== 'abandoned') {
    await job.acknowledge().catch((err: unknown) => {
      logger.error({ err: errorMessage(err) }, 'could not acknowledge the delivery; the broker will redeliver it');
    });
  }
  deps.requeues.settled(payload.jobId, result);
  metrics.jobEnded(result);
  if (result.outcome === 'finished') {
    root.setAttributes({ 'job.outcome': result.outcome, 'job.state': result.state });
    logger.info({ outcome: result.outcome, state: result.state }, 'job done');
  } else {
    root.setAttributes({ 'job.outcome': result.outcome, 'job.reason': result.cause });
    root.setStatus({ code: SpanStatusCode.ERROR, message: `${result.outcome}: ${result.cause}` });
    logger.info({ outcome: result.outcome, reason: result.cause }, 'job done');
  }
  root.end();
  return result;

  async function runSteps(): Promise<JobResult> {
    if (payload.invalid) {
      logger.error({ err: payload.invalid.message }, 'job payload is invalid');
      return await end({ action: 'finish', state: 'errored', logLine: `\nThe job could not be run: ${payload.invalid.message}\n` });
    }
    throwIfStopped();
    await abortableSleep(config.timeouts.initialSleepMs, stop.signal);
    const filterExecutable = config.payloadFilterExecutable;
    const generateScript = async (signal: AbortSignal): Promise<Buffer> => {
      const toGenerate = filterExecutable
        ? { ...payload, raw: await step('filter', () => filterPayload(filterExecutable, payload.raw, { maxBytes: config.payloadMaxBytes, signal })) }
        : payload;
      return step('script', () => deps.scripts.generate(toGenerate, signal));
    };

    const attributes = startAttributesOf(payload, config.defaults, hardTimeoutMs);
    // As travis: progress goes into the job log only when asked for, inside a fold.
    const textProgress = config.progressType === 'text';
    /**
     * While the start overlaps the script, its progress lines wait here: a
     * job whose script fails logs what it logged when nothing was started
     * for it.
     */
    let heldProgress: string[] | undefined = deps.sequentialStart ? undefined : [];
    const releaseProgress = (): void => {
      const held = heldProgress ?? [];
      heldProgress = undefined;
      for (const text of held) writeLog(text);
    };
    // A failed sink also fails the close that follows; no need to hear of it twice.
    const writeLog = (text: string): void => {
      if (heldProgress) heldProgress.push(text);
      else void log.write(text).catch(() => {});
    };
    /** Start the instance; `instance` is set as soon as there is one, so it is destroyed on every path. */
    const startInstance = async (sibling: AbortSignal): Promise<Instance> => {
      const startup = clock.startupDeadline();
      const signal = AbortSignal.any([startup.signal, sibling]);
      if (textProgress) writeLog(START_INSTANCE_FOLD_START);
      try {
        const started = await step('start', () =>
          backend.start(attributes, {
            signal,
            progress: textProgress ? (line) => writeLog(progressLine(line)) : () => {},
            logger,
            recordPhase: (phase, durationMs) => {
              metrics.bootPhase(phase, durationMs);
              logger.debug({ phase, duration_ms: durationMs }, 'boot phase');
            },
          }),
        );
        instance = started;
        root.setAttribute('instance.id', started.id);
        return started;
      } catch (err) {
        throw signal.aborted ? signal.reason : err;
      } finally {
        startup.dispose();
        if (textProgress) writeLog(START_INSTANCE_FOLD_END);
      }
    };

    let script: Buffer;
    let started: Instance;
    if (deps.sequentialStart) {
      script = await generateScript(stop.signal);
      started = await startInstance(stop.signal);
    } else {
      // The instance boots while the script is made: whichever fails first stops the other.
      const outcome = await both(
        (signal) => generateScript(AbortSignal.any([stop.signal, signal])).then((made) => {
          releaseProgress();
          return made;
        }),
        (signal) => startInstance(signal),
      );
      if (!outcome.ok) {
        if (outcome.failed === 'second') releaseProgress();
        else stoppedStart = outcome.settled;
        throw outcome.error;
      }
      [script, started] = outcome.values;
    }
    logger.info({ instance: started.id, startup_ms: started.startupMs }, 'instance started');

    const upload = clock.uploadDeadline();
    try {
      await step('upload', () => started.upload(script, { signal: upload.signal }));
    } catch (err) {
      throw upload.signal.aborted ? upload.signal.reason : err;
    } finally {
      upload.dispose();
    }
    instanceReady = true;
    deps.onInstanceReady?.();
    throwIfStopped();

    const ready = started;
    await step('started', () => job.started(ready.id, ready.vmSize));
    metrics.timeToStarted(Date.now() - takenAt);
    // travis' JobStartedMeta: every key, in its order.
    log.setStartedMeta({
      queued_at: payload.queuedAtText ?? null,
      repo: payload.repositorySlug,
      queue: payload.queue ?? '',
      infra: config.infra,
    });
    await log.write(
      workerInfoFold({
        hostname: processorId,
        version: deps.version,
        revision: deps.revision,
        instanceId: ready.id,
        imageName: ready.imageName,
        via: deps.queueType,
        startupMs: ready.startupMs,
      }),
    );

    clock.scriptStarted();
    const scriptStart = Date.now();
    const run = await step('run', () => ready.run({ output: log.stream, signal: stop.signal })).finally(() => {
      clock.scriptEnded();
      metrics.scriptRun(Date.now() - scriptStart);
    });
    throwIfStopped();
    logger.info({ exit_code: run.exitCode, signal: run.signal }, 'script exited');
    return await end({ action: 'finish', state: stateOfExit(run.exitCode) });
  }

  function throwIfStopped(): void {
    if (stop.signal.aborted) throw stop.signal.reason;
  }

  /** Carry out `decision`: publish what it says (a requeue past the limit becomes a finish). */
  async function end(decision: EndDecision): Promise<JobResult> {
    switch (decision.action) {
      case 'finish':
        return step('finish', async () => {
          await log.close(decision.logLine);
          await job.finish(decision.state);
          return { outcome: 'finished', state: decision.state };
        });
      case 'requeue': {
        const { cause } = decision;
        if (!deps.requeues.admit(payload.jobId)) {
          logger.error({ reason: cause, requeue_limit: deps.requeues.limit }, 'job requeued too many times in a row; ending it errored instead');
          return end(endPastRequeueLimit(cause, deps.requeues.limit));
        }
        // This run's log ends with a final part, as travis' cleanup closes it:
        // the logs service would otherwise keep it open. The next run starts
        // again at part 0.
        return step('requeue', async () => {
          await log.close().catch((err: unknown) => logger.warn({ err: errorMessage(err) }, 'could not close the log'));
          await job.requeue();
          return { outcome: 'requeued', cause, instanceReady };
        });
      }
      case 'abandon':
        return { outcome: 'abandoned', cause: decision.cause };
    }
  }

  /** End the run after `err` (or the stop that caused it). */
  async function endAfterError(err: unknown): Promise<JobResult> {
    const reason = stop.reason;
    const decision = endOf(reason, err);
    if (reason) {
      logger.info(describeStop(reason), 'job stopped');
    } else {
      // An error mayfly did not raise on purpose is a bug: its stack helps.
      const fields = isMayflyError(err)
        ? { err: err.message, code: err.code }
        : { err: errorMessage(err), code: UNEXPECTED_ERROR_CODE, stack: (err as Error | undefined)?.stack };
      logger.error(fields, decision.action === 'finish' ? 'job failed' : 'job failed on infrastructure, requeueing');
    }
    try {
      return await end(decision);
    } catch (publishErr) {
      // Neither state could be published (broker gone): leave the delivery
      // unacknowledged so the broker hands the job out again.
      logger.error({ err: errorMessage(publishErr) }, 'could not report the job; leaving it to be redelivered');
      return { outcome: 'abandoned', cause: 'report failed' };
    }
  }
}
