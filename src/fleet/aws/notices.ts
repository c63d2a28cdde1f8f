/**
 * EC2's notices, read from IMDSv2 every `TRAVIS_WORKER_HOST_NOTICE_POLL_INTERVAL`
 * (5 s: the interval AWS recommends for the spot notice, which comes two
 * minutes ahead):
 *
 *   spot/instance-action                  {"action":"terminate|stop|hibernate","time":"<ISO 8601>"}
 *   autoscaling/target-lifecycle-state    InService, ..., Terminated (a scale-in)
 *   events/recommendations/rebalance      {"noticeTime":"<ISO 8601>"}
 *
 * 404 means no notice. Each answer is checked; one that is not what EC2
 * sends (an HTML page, a truncated JSON, a state EC2 has no such name for)
 * is logged and read again next time, as is a read that fails: only a valid
 * notice acts, and each kind acts once.
 */
import { z } from 'zod';
import { HostMetadataError } from '../../errors.js';
import type { Logger } from '../../logger.js';
import { abortableSleep } from '../../util/abort.js';
import { MetadataFailures, type HostNotice, type HostNoticeKind } from '../notices.js';
import type { ImdsClient } from './imds.js';

/** An ISO 8601 time as EC2 writes them (`2026-12-04T21:30:00Z`), as ms since the epoch. */
const isoTime = z
  .string()
  .max(64)
  .transform((text, context) => {
    const ms = Date.parse(text);
    if (Number.isNaN(ms) || !/^\d{4}-\d{2}-\d{2}T/.test(text)) {
      context.addIssue({ code: 'custom', message: 'not an ISO 8601 time' });
      return z.NEVER;
    }
    return ms;
  });

const SpotInstanceAction = z.object({ action: z.enum(['terminate', 'stop', 'hibernate']), time: isoTime });
const RebalanceRecommendation = z.object({ noticeTime: isoTime });

/** Every target lifecycle state EC2 Auto Scaling documents ("Retrieve the target lifecycle state through instance metadata"). */
const TARGET_LIFECYCLE_STATES: ReadonlySet<string> = new Set([
  'InService',
  'Standby',
  'Detached',
  'Terminated',
  'Warmed:Stopped',
  'Warmed:Running',
  'Warmed:Hibernated',
  'Warmed:Terminated',
]);

/** Reads one notice's path; undefined when there is none. Throws `HostMetadataError` on an answer EC2 never sends. */
type NoticeReader = (imds: ImdsClient, signal: AbortSignal) => Promise<HostNotice | undefined>;

function parseJson<T>(path: string, text: string, schema: z.ZodType<T>): T {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new HostMetadataError(`instance metadata ${path}: not JSON`);
  }
  const parsed = schema.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new HostMetadataError(`instance metadata ${path}: ${issue?.path.join('.') || 'answer'}: ${issue?.message ?? 'invalid'}`);
  }
  return parsed.data;
}

const READERS: Record<Extract<HostNoticeKind, 'spot-interruption' | 'scale-in' | 'rebalance'>, NoticeReader> = {
  async 'spot-interruption'(imds, signal) {
    const path = 'spot/instance-action';
    const text = await imds.get(path, signal);
    if (text === undefined) return undefined;
    const { action, time } = parseJson(path, text, SpotInstanceAction);
    return { kind: 'spot-interruption', action, deadline: time };
  },
  async 'scale-in'(imds, signal) {
    const path = 'autoscaling/target-lifecycle-state';
    const state = (await imds.get(path, signal))?.trim();
    if (state === undefined) return undefined;
    if (!TARGET_LIFECYCLE_STATES.has(state)) throw new HostMetadataError(`instance metadata ${path}: "${state.slice(0, 40)}" is not a lifecycle state`);
    return state === 'Terminated' ? { kind: 'scale-in' } : undefined;
  },
  async rebalance(imds, signal) {
    const path = 'events/recommendations/rebalance';
    const text = await imds.get(path, signal);
    if (text === undefined) return undefined;
    parseJson(path, text, RebalanceRecommendation);
    return { kind: 'rebalance' };
  },
};

export interface AwsNoticeOptions {
  imds: ImdsClient;
  pollMs: number;
  logger: Logger;
  /** Called once per kind of notice, the first time it is read. */
  onNotice: (notice: HostNotice) => void;
  /** Ends the watch. */
  signal: AbortSignal;
}

/** Read EC2's notices until `signal` aborts; resolves then. */
export async function watchAwsNotices({ imds, pollMs, logger, onNotice, signal }: AwsNoticeOptions): Promise<void> {
  const heard = new Set<HostNoticeKind>();
  const failures = Object.fromEntries(Object.keys(READERS).map((kind) => [kind, new MetadataFailures(logger, `reading EC2's ${kind} notice`)]));
  while (!signal.aborted) {
    for (const [kind, read] of Object.entries(READERS)) {
      if (heard.has(kind as HostNoticeKind)) continue;
      try {
        const notice = await read(imds, signal);
        failures[kind]?.succeeded();
        if (notice === undefined) continue;
        heard.add(notice.kind);
        onNotice(notice);
      } catch (err) {
        if (signal.aborted) return;
        failures[kind]?.failed(err, pollMs);
      }
    }
    await abortableSleep(pollMs, signal).catch(() => undefined);
  }
}
