/**
 * The notices a cloud gives a host before it takes it away, as the
 * watchers (src/fleet/aws/notices.ts, src/fleet/gce/notices.ts) hear them,
 * and what the worker does with each (docs/fleet.md, "Notices from the
 * cloud"): a notice with a deadline drains within it, a scale-in drains
 * (and the lifecycle hook, when there is one, waits for it), a rebalance
 * recommendation only stops taking new jobs.
 */
import { errorMessage } from '../errors.js';
import type { Logger } from '../logger.js';

export type HostNotice =
  /** EC2's two-minute spot interruption notice: the instance is stopped, hibernated or terminated at `deadline`. */
  | { kind: 'spot-interruption'; deadline: number; action: string }
  /** The Auto Scaling group chose this instance to terminate (target lifecycle state `Terminated`). */
  | { kind: 'scale-in' }
  /** EC2 recommends moving work off this instance: it is at elevated risk of interruption. */
  | { kind: 'rebalance' }
  /** GCE preempts this (spot or preemptible) VM; it stops at `deadline`. */
  | { kind: 'preemption'; deadline: number }
  /** GCE stops this VM for host maintenance (its `onHostMaintenance` is TERMINATE) at `deadline`. */
  | { kind: 'maintenance'; deadline: number };

export type HostNoticeKind = HostNotice['kind'];

/** What a notice asks of the worker; the Worker's own methods. */
export interface NoticeTarget {
  drain(reason: string, options?: { deadline?: number }): void;
  pause(reason: 'rebalance'): void;
}

/** Act on `notice`: drain (bounded by its deadline, if it has one), or for a rebalance only stop taking jobs. */
export function actOnNotice(notice: HostNotice, worker: NoticeTarget): void {
  switch (notice.kind) {
    case 'spot-interruption':
    case 'preemption':
    case 'maintenance':
      worker.drain(notice.kind, { deadline: notice.deadline });
      return;
    case 'scale-in':
      worker.drain(notice.kind);
      return;
    case 'rebalance':
      worker.pause('rebalance');
      return;
  }
}

/**
 * Logs a metadata service's failures without flooding the log: the first
 * after a good read at warn, the ones that follow at debug, and the
 * recovery at info. A failure is never a notice.
 */
export class MetadataFailures {
  #failing = false;

  constructor(
    private readonly logger: Logger,
    private readonly what: string,
  ) {}

  failed(err: unknown, retryInMs: number): void {
    const fields = { err: errorMessage(err), retry_in_ms: retryInMs };
    if (this.#failing) {
      this.logger.debug(fields, `${this.what} still failing`);
    } else {
      this.logger.warn(fields, `${this.what} failed: not taken for a notice, retrying`);
      this.#failing = true;
    }
  }

  succeeded(): void {
    if (!this.#failing) return;
    this.#failing = false;
    this.logger.info(`${this.what} answers again`);
  }
}
