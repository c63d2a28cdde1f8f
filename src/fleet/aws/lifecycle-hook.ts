/**
 * `TRAVIS_WORKER_ASG_LIFECYCLE_HOOK`: the group's termination hook holds a
 * scaled-in instance in `Terminating:Wait`; this host completes the hook's
 * action itself, with no SNS/SQS in between. On scale-in (`begin`) it
 * finds its group and sends `RecordLifecycleActionHeartbeat` every
 * `TRAVIS_WORKER_ASG_LIFECYCLE_HEARTBEAT_INTERVAL` so the hook does not time
 * out while jobs finish; once the worker has drained and released
 * everything, its instances included (`complete`, a releaser), it sends
 * `CompleteLifecycleAction` with `CONTINUE`, and the group terminates it.
 *
 * Calls that fail are logged; the SDK retries throttling and 5xx itself. A
 * host that cannot complete the action is still terminated when the hook
 * times out, only later.
 */
import { RecordLifecycleActionHeartbeatCommand } from '@aws-sdk/client-auto-scaling';
import { errorMessage } from '../../errors.js';
import type { Logger } from '../../logger.js';
import { abortableSleep } from '../../util/abort.js';
import { completeLifecycleAction, findAutoScalingMember, type AutoScalingMember } from './auto-scaling.js';
import type { ImdsClient } from './imds.js';

/** Longest the completion may take while the worker stops: Auto Scaling answers in well under a second, the SDK retries thrice. */
const COMPLETE_TIMEOUT_MS = 30_000;

export interface LifecycleHookOptions {
  hookName: string;
  heartbeatMs: number;
  imds: ImdsClient;
  logger: Logger;
}

export class LifecycleHook {
  readonly #options: LifecycleHookOptions;
  readonly #heartbeats = new AbortController();
  #member: Promise<AutoScalingMember | undefined> | undefined;

  constructor(options: LifecycleHookOptions) {
    this.#options = options;
  }

  /** The group scales this instance in: find the group and keep the lifecycle action alive until `complete`. Once only. */
  begin(): void {
    if (this.#member) return;
    this.#member = this.#find(this.#heartbeats.signal);
    void this.#member.then((member) => member && this.#sendHeartbeats(member));
  }

  /** Let the termination go on (CONTINUE); nothing if the scale-in never began. Resolves whatever happens. */
  async complete(): Promise<void> {
    if (!this.#member) return;
    this.#heartbeats.abort();
    const signal = AbortSignal.timeout(COMPLETE_TIMEOUT_MS);
    // A lookup the heartbeats' end cut short (or that failed) is tried again: the hook must not be left to time out.
    const member = (await this.#member) ?? (await this.#find(signal));
    if (!member) return;
    const { hookName, logger } = this.#options;
    try {
      await completeLifecycleAction(member, hookName, signal);
      logger.info({ hook: hookName, group: member.groupName, instance_id: member.instanceId }, 'lifecycle action completed: the group may terminate this instance');
    } catch (err) {
      logger.error({ hook: hookName, group: member.groupName, err: errorMessage(err) }, 'completing the lifecycle action failed: the group terminates this instance when the hook times out');
    } finally {
      member.client.destroy();
    }
  }

  async #find(signal: AbortSignal): Promise<AutoScalingMember | undefined> {
    try {
      return await findAutoScalingMember(this.#options.imds, signal);
    } catch (err) {
      if (!signal.aborted) this.#options.logger.error({ hook: this.#options.hookName, err: errorMessage(err) }, 'finding this instance in its Auto Scaling group failed');
      return undefined;
    }
  }

  async #sendHeartbeats(member: AutoScalingMember): Promise<void> {
    const { hookName, heartbeatMs, logger } = this.#options;
    const signal = this.#heartbeats.signal;
    while (!signal.aborted) {
      try {
        await member.client.send(
          new RecordLifecycleActionHeartbeatCommand({ AutoScalingGroupName: member.groupName, LifecycleHookName: hookName, InstanceId: member.instanceId }),
          { abortSignal: signal },
        );
        logger.debug({ hook: hookName }, 'lifecycle action heartbeat sent');
      } catch (err) {
        if (signal.aborted) return;
        logger.warn({ hook: hookName, group: member.groupName, err: errorMessage(err) }, 'lifecycle action heartbeat failed');
      }
      await abortableSleep(heartbeatMs, signal).catch(() => undefined);
    }
  }
}
