/**
 * The worker's lifecycle as an explicit state union. Every change goes
 * through `transition`, which throws on a move the table below does not
 * allow, so "resume while draining" or "drain after stopped" is a loud bug
 * (or a 409 at the control API), never a silent half-state.
 *
 *   STARTING -> RUNNING <-> PAUSED
 *   RUNNING | PAUSED -> DRAINING      (stop taking jobs, let running ones finish)
 *   STARTING | RUNNING | PAUSED | DRAINING -> STOPPING   (requeue what still runs, close)
 *   STOPPING -> STOPPED
 */
import { EventEmitter } from 'node:events';

export type WorkerState = 'STARTING' | 'RUNNING' | 'PAUSED' | 'DRAINING' | 'STOPPING' | 'STOPPED';

const ALLOWED: Record<WorkerState, readonly WorkerState[]> = {
  STARTING: ['RUNNING', 'STOPPING'],
  RUNNING: ['PAUSED', 'DRAINING', 'STOPPING'],
  PAUSED: ['RUNNING', 'DRAINING', 'STOPPING'],
  DRAINING: ['STOPPING'],
  STOPPING: ['STOPPED'],
  STOPPED: [],
};

/** Something the worker's current state does not allow (the control API answers 409). */
export class LifecycleError extends Error {
  readonly code: string = 'E_LIFECYCLE';
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** A state change the lifecycle does not allow; `from` and `to` say which. */
export class IllegalTransitionError extends LifecycleError {
  override readonly code = 'E_ILLEGAL_TRANSITION';
  constructor(
    readonly from: WorkerState,
    readonly to: WorkerState,
  ) {
    super(`the worker cannot go from ${from} to ${to}`);
  }
}

export function canTransition(from: WorkerState, to: WorkerState): boolean {
  return ALLOWED[from].includes(to);
}

export interface LifecycleEvents {
  change: [to: WorkerState, from: WorkerState];
}

export class Lifecycle extends EventEmitter<LifecycleEvents> {
  private current: WorkerState = 'STARTING';
  /** When the worker started, for uptime (ms since the epoch). */
  readonly startedAt = Date.now();

  get state(): WorkerState {
    return this.current;
  }

  /** Move to `to`; throws `IllegalTransitionError` if the table does not allow it. */
  transition(to: WorkerState): void {
    const from = this.current;
    if (!canTransition(from, to)) throw new IllegalTransitionError(from, to);
    this.current = to;
    this.emit('change', to, from);
  }

  /** Throw a `LifecycleError` unless the worker is running or paused (e.g. before resizing the pool). */
  /** Taking jobs, or paused: what a drain, a pause or a resize can still act on. */
  get active(): boolean {
    return this.current === 'RUNNING' || this.current === 'PAUSED';
  }

  assertActive(action: string): void {
    if (!this.active) {
      throw new LifecycleError(`cannot ${action} while the worker is ${this.current}`);
    }
  }
}
