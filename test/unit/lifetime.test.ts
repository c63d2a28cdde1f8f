/**
 * The host lifetime policy's decisions (src/fleet/lifetime.ts), on a subject
 * the test drives: which limit drains the worker, and that only one drain
 * is the policy's. Time is vitest's fake clock, moved by the test. The
 * scenarios in test/fault/host-lifetime.test.ts run it on a whole worker.
 */
import { EventEmitter } from 'node:events';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { LifetimeConfig } from '../../src/config/types.js';
import { watchLifetime, type LifetimeSubject } from '../../src/fleet/lifetime.js';
import { JobBudget } from '../../src/job-budget.js';
import { silentLogger } from '../../src/logger.js';
import type { ProcessorStatus } from '../../src/processor.js';

const NO_LIMITS: LifetimeConfig = { idleShutdownAfterMs: 0, maxJobs: 0, maxUptimeMs: 0, hostTerminate: false };

/** A worker stand-in: jobs start and end when the test says; drains are recorded. */
class Subject extends EventEmitter<{ processor: [ProcessorStatus] }> implements LifetimeSubject {
  running = 0;
  accepting = true;
  readonly drains: string[] = [];
  readonly budget: JobBudget;

  constructor(maxJobs = 0) {
    super();
    this.budget = new JobBudget(maxJobs > 0 ? maxJobs : Infinity);
  }

  drain(reason: string): void {
    this.drains.push(reason);
  }

  acceptsDrain(): boolean {
    return this.accepting;
  }

  runningJobs(): number {
    return this.running;
  }

  onProcessorChange(listener: (status: ProcessorStatus) => void): () => void {
    this.on('processor', listener);
    return () => this.off('processor', listener);
  }

  jobStarts(): void {
    this.running++;
    this.emit('processor', { id: 'p1', state: 'processing', processed: 0 });
  }

  jobEnds(): void {
    this.running--;
    this.emit('processor', { id: 'p1', state: 'waiting', processed: 1 });
  }
}

const stop = new Set<AbortController>();
beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  for (const controller of stop) controller.abort();
  stop.clear();
  vi.useRealTimers();
});

function watch(policy: Partial<LifetimeConfig>, subject: Subject) {
  const controller = new AbortController();
  stop.add(controller);
  return watchLifetime({ ...NO_LIMITS, ...policy }, subject, silentLogger, controller.signal);
}

describe('the host lifetime policy', () => {
  it('drains after MAX_UPTIME, once, and says so', () => {
    const subject = new Subject();
    const watching = watch({ maxUptimeMs: 60_000 }, subject);
    vi.advanceTimersByTime(59_999);
    expect(watching.reached).toBeUndefined();
    vi.advanceTimersByTime(1);
    expect(subject.drains).toEqual(['TRAVIS_WORKER_MAX_UPTIME reached']);
    expect(watching.reached).toBe('max-uptime');
    vi.advanceTimersByTime(3_600_000);
    expect(subject.drains).toHaveLength(1);
  });

  it('drains when the job budget is spent', () => {
    const subject = new Subject(2);
    const watching = watch({ maxJobs: 2 }, subject);
    for (let i = 0; i < 2; i++) {
      expect(subject.budget.reserve()).toBe(true);
      subject.budget.spend();
    }
    expect(subject.drains).toEqual(['TRAVIS_WORKER_MAX_JOBS taken']);
    expect(watching.reached).toBe('max-jobs');
  });

  it('never drains for idleness while a job runs, and counts idleness from the end of the last job', () => {
    const subject = new Subject();
    const watching = watch({ idleShutdownAfterMs: 10_000 }, subject);
    vi.advanceTimersByTime(9_000);
    subject.jobStarts();
    // A job that outlasts the idle limit.
    vi.advanceTimersByTime(30_000);
    expect(subject.drains).toEqual([]);
    subject.jobEnds();
    vi.advanceTimersByTime(9_999);
    expect(subject.drains).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(subject.drains).toEqual(['no job ran for TRAVIS_WORKER_IDLE_SHUTDOWN_AFTER']);
    expect(watching.reached).toBe('idle');
  });

  it("leaves a worker that is already stopping alone: its drain is not the policy's", () => {
    const subject = new Subject(1);
    subject.accepting = false;
    const watching = watch({ maxJobs: 1 }, subject);
    subject.budget.reserve();
    subject.budget.spend();
    expect(subject.drains).toEqual([]);
    expect(watching.reached).toBeUndefined();
  });

  it('drains at once when the budget was spent before it started watching', () => {
    const subject = new Subject(1);
    subject.budget.reserve();
    subject.budget.spend();
    const watching = watch({ maxJobs: 1 }, subject);
    expect(watching.reached).toBe('max-jobs');
  });
});
