/**
 * The one suite every job queue passes (amqp, file): the contract of
 * src/queue/contract.ts, checked through its behaviour. Each queue's test
 * file calls `describeQueueConformance` with a setup that makes queues on a
 * queue name of their own per test, puts jobs on it as a producer would,
 * and reads back what the queue reported the way a consumer of that queue
 * type would (the reporting queues for amqp, the `.state` and log files for
 * file).
 *
 * What only some queue types have is declared by the setup's
 * `QueueFeatures`, and its cases are described only for those: cancel
 * commands (the contract: "queue types without commands never call it")
 * and a connection that can be lost (`lost`, `onReadinessChange`: "queues
 * that are always ready never call it").
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { CancelCommand, JobQueue, JobSource, JobState, QueuedJob, TerminalState } from '../../src/queue/contract.js';

/** What a queue reported for its jobs, read back as that queue type's consumers read it. */
export interface QueueReader {
  /** The last state reported for the job, once everything reported so far can be read; undefined before any. */
  lastState(jobId: number): Promise<JobState | undefined>;
  /** The log of the job's latest run, as reported so far (every part `flushed()` covered). */
  log(jobId: number): Promise<string>;
  /** The bodies of the first `count` deliveries the queue rejected as not jobs, in the order they were published. */
  rejected(count: number, signal: AbortSignal): Promise<string[]>;
}

/** One test's queue name and what goes with it. */
export interface QueueConformanceTarget {
  /** A new, unopened queue on this target's queue name; a second call stands for a second worker on the same queue. */
  createQueue(): JobQueue;
  /**
   * Put a job on the queue as its producer would: a payload object, or text
   * that is not a job at all. Called once a queue on the name was opened
   * (opening declares the AMQP queue, makes the directories).
   */
  publish(body: Record<string, unknown> | string): Promise<void>;
  reader: QueueReader;
  /** What the target's queues still hold open or claimed, in words; empty once their sources and the queues are closed. */
  leftovers(): Promise<string[]>;
  /** Send a cancel command the way this queue type carries them; required with `QueueFeatures.commands`. */
  sendCancel?(command: CancelCommand): Promise<void>;
  /** Cut the queues off from where the jobs live (the broker closes the connection); required with `QueueFeatures.connectionLoss`. */
  interrupt?(): Promise<void>;
}

/** What the queue type has beyond what every queue has. */
export interface QueueFeatures {
  /** Cancel commands reach `onCancel`. */
  commands: boolean;
  /** Its connection can be lost and comes back: `lost` aborts and readiness changes meanwhile. */
  connectionLoss: boolean;
}

export interface QueueConformanceWorld {
  /** A target with a queue name of its own (called once per test). */
  target(): Promise<QueueConformanceTarget>;
  /** Stop whatever the setup started. */
  close(): Promise<void>;
}

const WAIT_MS = 10_000;
const TERMINAL_STATES: TerminalState[] = ['passed', 'failed', 'errored', 'cancelled'];

/** The readiness changes a queue reports, to be awaited one by one. */
function readinessChanges(queue: JobQueue): () => Promise<string | undefined> {
  const heard: Array<string | undefined> = [];
  let wake: (() => void) | undefined;
  queue.onReadinessChange((reason) => {
    heard.push(reason);
    wake?.();
  });
  return async () => {
    while (heard.length === 0) await new Promise<void>((resolve) => (wake = resolve));
    return heard.shift();
  };
}

function required<T>(method: T | undefined, what: string): T {
  if (method === undefined) throw new Error(`the setup declares ${what}, but its target can't do it`);
  return method;
}

export function describeQueueConformance(name: string, features: QueueFeatures, setup: () => Promise<QueueConformanceWorld>): void {
  describe(`queue conformance: ${name}`, () => {
    let world: QueueConformanceWorld;
    let target: QueueConformanceTarget;
    /** Closed after each test in reverse order: sources before their queues. */
    const opened: Array<{ close(): Promise<void> }> = [];
    /** Job ids are unique across the file: a reader may see every test's jobs. */
    let lastJobId = 1000;

    beforeAll(async () => {
      world = await setup();
    });
    beforeEach(async () => {
      target = await world.target();
    });
    afterEach(async () => {
      for (const thing of opened.splice(0).reverse()) await thing.close();
      expect(await target.leftovers()).toEqual([]);
    });
    afterAll(async () => {
      await world?.close();
    });

    async function openQueue(): Promise<JobQueue> {
      const queue = target.createQueue();
      await queue.open();
      opened.push(queue);
      return queue;
    }

    async function openSource(queue?: JobQueue): Promise<JobSource> {
      const source = await (queue ?? (await openQueue())).openSource('p1');
      opened.push(source);
      return source;
    }

    /** A job payload with a fresh id and no `uuid` (so each delivery is a run of its own to the reader). */
    function payload(): { jobId: number; body: Record<string, unknown> } {
      const jobId = ++lastJobId;
      return {
        jobId,
        body: {
          type: 'test',
          job: { id: jobId, number: `${jobId}.1`, queued_at: '2026-11-22T10:00:00Z' },
          repository: { id: 2, slug: 'octo/conformance' },
          config: { language: 'shell', script: 'echo hi' },
          timeouts: { hard_limit: 3000 },
        },
      };
    }

    async function publishJob(): Promise<number> {
      const { jobId, body } = payload();
      await target.publish(body);
      return jobId;
    }

    async function nextJob(source: JobSource): Promise<QueuedJob> {
      const job = await source.next(AbortSignal.timeout(WAIT_MS));
      if (!job) throw new Error('the source returned no job');
      return job;
    }

    /** A job published and taken by a source of a new queue, then reported received and started. */
    async function startedJob(): Promise<{ source: JobSource; jobId: number; job: QueuedJob }> {
      const source = await openSource();
      const jobId = await publishJob();
      const job = await nextJob(source);
      await job.received();
      await job.started('instance-1');
      return { source, jobId, job };
    }

    async function settle(job: QueuedJob, state: TerminalState = 'passed'): Promise<void> {
      await job.finish(state);
      await job.acknowledge();
    }

    it('delivers a published job once, with its payload; acknowledged, it is not delivered again', async () => {
      const source = await openSource();
      const { jobId, body } = payload();
      await target.publish(body);
      const job = await nextJob(source);
      expect(job.payload).toMatchObject({ jobId, jobNumber: `${jobId}.1`, repositorySlug: 'octo/conformance', hardLimitMs: 3_000_000 });
      expect(job.payload.raw).toEqual(body);
      expect(job.lost.aborted).toBe(false);
      await job.received();
      await job.started('instance-1');
      await settle(job);

      const second = await publishJob();
      const next = await nextJob(source);
      expect(next.payload.jobId).toBe(second);
      await settle(next);
    });

    it.each(TERMINAL_STATES)('reports received, started and %s, each in its turn', async (terminal) => {
      const source = await openSource();
      const jobId = await publishJob();
      const job = await nextJob(source);
      await job.received();
      expect(await target.reader.lastState(jobId)).toBe('received');
      await job.started('instance-1');
      expect(await target.reader.lastState(jobId)).toBe('started');
      await job.finish(terminal);
      expect(await target.reader.lastState(jobId)).toBe(terminal);
      await job.acknowledge();
    });

    it('reports log parts in order, all delivered once flushed() resolves', async () => {
      const { jobId, job } = await startedJob();
      const lines = Array.from({ length: 50 }, (_, n) => `line ${n} ünïcode\r\n`);
      for (const [number, content] of lines.entries()) {
        await job.log.publish({ number, content, final: false, ...(number === 0 ? { meta: { queued_at: null, repo: 'octo/conformance', queue: '', infra: 'test' } } : {}) });
      }
      await job.log.publish({ number: lines.length, content: '', final: true });
      await job.log.flushed();
      expect(await target.reader.log(jobId)).toBe(lines.join(''));
      await settle(job);
    });

    it('gives a requeued job back with its payload, and its new run starts a log of its own', async () => {
      const { source, jobId, job: first } = await startedJob();
      await first.log.publish({ number: 0, content: 'first run\r\n', final: false });
      await first.log.flushed();
      await first.requeue();
      await first.acknowledge();

      const again = await nextJob(source);
      expect(again.payload.jobId).toBe(jobId);
      expect(again.payload.raw).toEqual(first.payload.raw);
      await again.received();
      await again.started('instance-2');
      await again.log.publish({ number: 0, content: 'second run\r\n', final: false });
      await again.log.publish({ number: 1, content: '', final: true });
      await again.log.flushed();
      await settle(again);
      expect(await target.reader.lastState(jobId)).toBe('passed');
      expect(await target.reader.log(jobId)).toBe('second run\r\n');
    });

    it('rejects deliveries that are not jobs, and the next job still comes', async () => {
      const source = await openSource();
      const notJson = '{"job": not json';
      const noJobId = JSON.stringify({ job: {}, repository: { slug: 'octo/conformance' } });
      await target.publish(notJson);
      await target.publish(noJobId);
      const jobId = await publishJob();

      const job = await nextJob(source);
      expect(job.payload.jobId).toBe(jobId);
      expect(await target.reader.rejected(2, AbortSignal.timeout(WAIT_MS))).toEqual([notJson, noJobId]);
      await settle(job);
    });

    it('returns no job from next() once its signal aborts or the source closes', async () => {
      const source = await openSource();
      const waiting = new AbortController();
      const aborted = source.next(waiting.signal);
      waiting.abort();
      expect(await aborted).toBeUndefined();

      const pending = source.next(AbortSignal.timeout(WAIT_MS));
      await source.close();
      expect(await pending).toBeUndefined();
      expect(await source.next(AbortSignal.timeout(WAIT_MS))).toBeUndefined();
    });

    it('stops taking jobs when the source closes, lets the job in flight finish, keeps the rest for the next worker and leaves nothing behind', async () => {
      const queue = await openQueue();
      const source = await openSource(queue);
      const taken = await publishJob();
      const left = await publishJob();
      const job = await nextJob(source);
      expect(job.payload.jobId).toBe(taken);

      const closing = source.close();
      expect(await source.next(AbortSignal.timeout(WAIT_MS))).toBeUndefined();
      await settle(job);
      await closing;
      await queue.close();
      expect(await target.reader.lastState(taken)).toBe('passed');
      expect(await target.leftovers()).toEqual([]);

      // The next worker on the queue gets the job not taken, and not the one acknowledged.
      const next = await nextJob(await openSource());
      expect(next.payload.jobId).toBe(left);
      await settle(next);
    });

    it('counts the jobs ready in the queue: not the ones a worker has taken, nor the ones settled', async () => {
      const queue = await openQueue();
      expect(await queue.readyJobs()).toBe(0);
      await publishJob();
      await publishJob();
      await publishJob();
      expect(await queue.readyJobs()).toBe(3);
      const source = await openSource(queue);
      const job = await nextJob(source);
      expect(await queue.readyJobs()).toBe(2);
      await settle(job);
      await source.close();
      expect(await queue.readyJobs()).toBe(2);
    });

    it('is ready once open, and stays ready while jobs flow', async () => {
      const queue = await openQueue();
      const heard: Array<string | undefined> = [];
      queue.onReadinessChange((reason) => heard.push(reason));
      expect(queue.notReadyReason()).toBeUndefined();
      const source = await openSource(queue);
      await publishJob();
      await settle(await nextJob(source));
      expect(queue.notReadyReason()).toBeUndefined();
      expect(heard).toEqual([]);
    });

    if (features.commands) {
      it('passes each cancel command to every onCancel listener', async () => {
        const queue = await openQueue();
        const heard = (): Promise<CancelCommand> => new Promise((resolve) => queue.onCancel(resolve));
        const both = Promise.all([heard(), heard()]);
        const command: CancelCommand = { jobId: 4242, reason: 'cancelled by octocat', source: 'api' };
        await required(target.sendCancel, 'commands').call(target, command);
        expect(await both).toEqual([command, command]);
      });
    }

    if (features.connectionLoss) {
      it('when its connection is lost: the job in flight is lost, readiness says why until it is back, and the job comes again', async () => {
        const queue = await openQueue();
        const nextChange = readinessChanges(queue);
        const source = await openSource(queue);
        const jobId = await publishJob();
        const job = await nextJob(source);
        await job.received();
        const lost = new Promise<void>((resolve) => job.lost.addEventListener('abort', () => resolve(), { once: true }));

        await required(target.interrupt, 'connectionLoss').call(target);
        await lost;
        expect(await nextChange()).toMatch(/\S/);

        const again = await nextJob(source);
        expect(again.payload.jobId).toBe(jobId);
        expect(await nextChange()).toBeUndefined();
        expect(queue.notReadyReason()).toBeUndefined();
        await settle(again);
        expect(await target.reader.lastState(jobId)).toBe('passed');
      });
    }
  });
}
