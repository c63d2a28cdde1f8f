/**
 * Jobs this worker has reported (terminal state or `reset`, confirmed by the
 * broker) but not yet acknowledged. If the connection dies in between (the
 * instance was being destroyed, the ack was on the wire), the broker hands
 * the job out again, flagged `redelivered`; running it again would give it
 * a second terminal state (or, after `reset`, a second run beside the one
 * the hub queues). Travis-ci/worker runs it again. mayfly acknowledges such
 * a redelivery unrun when it comes back here; a redelivery another worker
 * takes is beyond any one worker's memory.
 */
import type { JobState } from '../contract.js';

/** Reports remembered at most: far more than a pool runs between a reconnect and the redeliveries it brings. */
const REMEMBERED = 10_000;

export class ReportedJobs {
  /** Job id -> the state reported, oldest first (a Map keeps insertion order). */
  private readonly reported = new Map<number, JobState>();

  constructor(private readonly capacity = REMEMBERED) {}

  /** The job's final report was confirmed; its acknowledgement is still to come. */
  record(jobId: number, state: JobState): void {
    this.reported.delete(jobId);
    this.reported.set(jobId, state);
    if (this.reported.size > this.capacity) {
      const oldest = this.reported.keys().next();
      if (!oldest.done) this.reported.delete(oldest.value);
    }
  }

  /** The job's delivery was acknowledged (or its redelivery was): nothing to remember. */
  forget(jobId: number): void {
    this.reported.delete(jobId);
  }

  /** What was reported for a job whose acknowledgement never arrived, if anything. */
  reportedState(jobId: number): JobState | undefined {
    return this.reported.get(jobId);
  }
}
