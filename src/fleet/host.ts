/**
 * The host in its cloud, as main.ts wires it: which metadata service to
 * watch (`TRAVIS_WORKER_HOST_CLOUD`; `none` starts nothing and never
 * probes an address), what each notice does to the worker, and the ASG
 * lifecycle hook, whose completion main.ts releases after everything else.
 */
import type { WorkerConfig } from '../config/types.js';
import type { Logger } from '../logger.js';
import type { WorkerMetrics } from '../telemetry/metrics.js';
import { ImdsClient } from './aws/imds.js';
import { LifecycleHook } from './aws/lifecycle-hook.js';
import { watchAwsNotices } from './aws/notices.js';
import { watchGceNotices } from './gce/notices.js';
import { actOnNotice, type HostNotice, type NoticeTarget } from './notices.js';

export interface HostFleetOptions {
  settings: WorkerConfig['host'];
  logger: Logger;
  metrics: WorkerMetrics;
}

export class HostFleet {
  /** The lifecycle hook this host completes, when `TRAVIS_WORKER_ASG_LIFECYCLE_HOOK` names one. */
  readonly lifecycleHook: LifecycleHook | undefined;
  readonly #options: HostFleetOptions;
  readonly #imds: ImdsClient | undefined;

  constructor(options: HostFleetOptions) {
    this.#options = options;
    const { settings, logger } = options;
    this.#imds = settings.cloud === 'aws' ? new ImdsClient() : undefined;
    this.lifecycleHook =
      this.#imds && settings.asgLifecycleHook !== undefined
        ? new LifecycleHook({ hookName: settings.asgLifecycleHook, heartbeatMs: settings.asgHeartbeatMs, imds: this.#imds, logger })
        : undefined;
  }

  /** Watch the cloud's notices until `signal` aborts, acting on `worker`. */
  watch(worker: NoticeTarget, signal: AbortSignal): void {
    const { settings, logger, metrics } = this.#options;
    const noticeLogger = logger.child({ host_cloud: settings.cloud });
    const onNotice = (notice: HostNotice): void => {
      metrics.hostNotice(notice.kind);
      const { kind, ...details } = notice;
      noticeLogger.warn({ notice: kind, ...details, ...('deadline' in details ? { deadline: new Date(details.deadline).toISOString() } : {}) }, 'notice from the cloud');
      if (notice.kind === 'scale-in') this.lifecycleHook?.begin();
      actOnNotice(notice, worker);
    };
    if (this.#imds) {
      void watchAwsNotices({ imds: this.#imds, pollMs: settings.noticePollMs, logger: noticeLogger, onNotice, signal });
    } else if (settings.cloud === 'gce') {
      void watchGceNotices({ pollMs: settings.noticePollMs, logger: noticeLogger, onNotice, signal });
    }
  }
}
