/**
 * What each signal does (travis-ci/worker's set, with a real drain):
 *
 *   SIGTERM, SIGINT   drain: take no more jobs, let running ones finish within
 *                     TRAVIS_WORKER_SHUTDOWN_TIMEOUT, requeue the rest, exit 0;
 *                     a second one skips the wait (requeue now)
 *   SIGUSR2           pause / resume taking jobs (running jobs go on)
 *   SIGTTIN, SIGTTOU  pool size +1 / -1 (the removed processor finishes its job first)
 *   SIGUSR1           one log line with the worker's status
 *
 * systemd, `docker stop`, autoscaling lifecycle hooks and preemption notices
 * all send SIGTERM, so none of them loses a job or leaves a VM.
 */
import { errorMessage } from '../errors.js';
import type { Logger } from '../logger.js';
import { LifecycleError } from './state.js';

/** What the signals act on. */
export interface SignalControl {
  drain(reason: string): void;
  stop(reason: string): void;
  togglePause(): void;
  increment(): Promise<void>;
  decrement(): void;
  logStatus(message: string): void;
}

/** Where signals come from: `process`, or an EventEmitter in tests. */
export interface SignalSource {
  on(event: NodeJS.Signals, listener: (signal: NodeJS.Signals) => void): unknown;
  off(event: NodeJS.Signals, listener: (signal: NodeJS.Signals) => void): unknown;
}

export const HANDLED_SIGNALS: readonly NodeJS.Signals[] = ['SIGTERM', 'SIGINT', 'SIGUSR1', 'SIGUSR2', 'SIGTTIN', 'SIGTTOU'];

/** Handle the worker's signals from `source`; returns the function that stops handling them. */
export function handleSignals(worker: SignalControl, logger: Logger, source: SignalSource = process): () => void {
  let stopSignals = 0;

  function attempt(signal: NodeJS.Signals, action: () => Promise<void> | void): void {
    const report = (err: unknown): void => {
      if (err instanceof LifecycleError) logger.warn({ signal, err: err.message }, 'signal ignored');
      else logger.error({ signal, err: errorMessage(err) }, 'handling the signal failed');
    };
    try {
      void Promise.resolve(action()).catch(report);
    } catch (err) {
      report(err);
    }
  }

  const listener = (signal: NodeJS.Signals): void => {
    switch (signal) {
      case 'SIGTERM':
      case 'SIGINT':
        stopSignals++;
        if (stopSignals === 1) {
          logger.warn({ signal }, `${signal} received: draining (send it again to requeue running jobs and exit now)`);
          attempt(signal, () => worker.drain(signal));
        } else {
          logger.warn({ signal }, `${signal} received again: requeueing running jobs and exiting now`);
          attempt(signal, () => worker.stop(`second ${signal}`));
        }
        return;
      case 'SIGUSR2':
        logger.info({ signal }, 'SIGUSR2 received: toggling pause');
        attempt(signal, () => worker.togglePause());
        return;
      case 'SIGTTIN':
        logger.info({ signal }, 'SIGTTIN received: adding a processor');
        attempt(signal, () => worker.increment());
        return;
      case 'SIGTTOU':
        logger.info({ signal }, 'SIGTTOU received: removing a processor (after its job)');
        attempt(signal, () => worker.decrement());
        return;
      case 'SIGUSR1':
        worker.logStatus('received SIGUSR1');
        return;
      default:
        logger.info({ signal }, 'ignoring signal');
    }
  };
  for (const signal of HANDLED_SIGNALS) source.on(signal, listener);
  return () => {
    for (const signal of HANDLED_SIGNALS) source.off(signal, listener);
  };
}
