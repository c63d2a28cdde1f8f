/**
 * The notice watchers against fake metadata services that speak the real
 * paths: each notice is heard once and with its deadline; a metadata
 * service that fails or answers garbage is logged and read again, and its
 * answers are never taken for a notice.
 */
import { EventEmitter, once } from 'node:events';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ImdsClient } from '../../src/fleet/aws/imds.js';
import { watchAwsNotices } from '../../src/fleet/aws/notices.js';
import { PREEMPTION_NOTICE_MS, watchGceNotices } from '../../src/fleet/gce/notices.js';
import type { HostNotice } from '../../src/fleet/notices.js';
import { FakeGceMetadata, type GceMetadataRequest } from '../fakes/gce-metadata-server.js';
import { FakeImds, type ImdsRequest } from '../fakes/imds-server.js';
import { captureLog } from '../helpers/log-capture.js';
import { freePort } from '../helpers/ports.js';
import { setProcessEnv } from '../helpers/process-env.js';

/** Notices as they arrive; `next()` resolves with the next one. */
function noticeQueue(): { onNotice: (notice: HostNotice) => void; next: (signal: AbortSignal) => Promise<HostNotice>; all: HostNotice[] } {
  const all: HostNotice[] = [];
  let waiting: ((notice: HostNotice) => void) | undefined;
  let read = 0;
  return {
    all,
    onNotice(notice) {
      all.push(notice);
      waiting?.(notice);
    },
    next(signal) {
      const index = read++;
      if (all[index]) return Promise.resolve(all[index]);
      return new Promise((resolve, reject) => {
        waiting = (notice) => {
          waiting = undefined;
          resolve(notice);
        };
        signal.addEventListener('abort', () => reject(new Error(`no notice; heard: ${JSON.stringify(all)}`)), { once: true });
      });
    },
  };
}

/** Resolves once `fake` has answered `count` more requests matching `match` (or, `unanswered`, held them without an answer). */
async function answered<T extends { status: number }>(
  fake: EventEmitter<{ request: [T] }>,
  count: number,
  match: (request: T) => boolean,
  { unanswered = false } = {},
): Promise<void> {
  let seen = 0;
  await new Promise<void>((resolve) => {
    const listener = (request: T): void => {
      if ((request.status === 0) !== unanswered || !match(request)) return;
      if (++seen < count) return;
      fake.off('request', listener);
      resolve();
    };
    fake.on('request', listener);
  });
}

describe('EC2 notices from IMDSv2', () => {
  let imds: FakeImds;
  let watch: AbortController;
  beforeAll(async () => {
    imds = await FakeImds.start();
  });
  afterEach(() => watch.abort());
  afterAll(() => imds.close());

  it('hears the spot notice with its time, the scale-in and the rebalance recommendation, each once', async () => {
    watch = new AbortController();
    const notices = noticeQueue();
    const signal = AbortSignal.timeout(10_000);
    void watchAwsNotices({ imds: new ImdsClient({ endpoint: imds.endpoint }), pollMs: 20, logger: captureLog().logger, onNotice: notices.onNotice, signal: watch.signal });

    await answered<ImdsRequest>(imds, 3, (request) => request.path.endsWith('/spot/instance-action'));
    expect(notices.all).toEqual([]);
    const time = new Date(Math.floor(Date.now() / 1000) * 1000 + 120_000);
    imds.noticeSpot(time);
    expect(await notices.next(signal)).toEqual({ kind: 'spot-interruption', action: 'terminate', deadline: time.getTime() });
    imds.recommendRebalance(new Date());
    expect(await notices.next(signal)).toEqual({ kind: 'rebalance' });
    // The watch reads on; what it heard is not heard again.
    await answered<ImdsRequest>(imds, 3, (request) => request.path.endsWith('/target-lifecycle-state'));
    expect(notices.all.map((notice) => notice.kind)).toEqual(['spot-interruption', 'rebalance']);
    imds.setTargetLifecycleState('Terminated');
    expect(await notices.next(signal)).toEqual({ kind: 'scale-in' });
  });

  it('takes nothing from a service that hangs, fails or answers garbage, logs it, and hears the notice once it answers again', async () => {
    watch = new AbortController();
    imds.set('spot/instance-action', undefined);
    imds.setTargetLifecycleState('InService');
    imds.set('events/recommendations/rebalance', undefined);
    const log = captureLog();
    const notices = noticeQueue();
    const signal = AbortSignal.timeout(15_000);
    const client = new ImdsClient({ endpoint: imds.endpoint, requestTimeoutMs: 50 });
    void watchAwsNotices({ imds: client, pollMs: 20, logger: log.logger, onNotice: notices.onNotice, signal: watch.signal });

    imds.mode = 'hang';
    // Each read that hangs is given up (the request times out) and tried again.
    await answered<ImdsRequest>(imds, 3, () => true, { unanswered: true });
    expect(await log.waitFor((line) => String(line.err).includes('timeout'), signal)).toMatchObject({ level: 'warn' });
    for (const mode of ['garbage', 'error'] as const) {
      imds.mode = mode;
      await answered<ImdsRequest>(imds, 6, () => true);
    }
    imds.mode = 'ok';
    // Answers that look like notices but are not what EC2 sends.
    imds.set('spot/instance-action', '{"action":"terminate","time":"in two minutes"}');
    imds.setTargetLifecycleState('<html>Terminated</html>');
    imds.set('events/recommendations/rebalance', '{"noticeTime":');
    await answered<ImdsRequest>(imds, 6, (request) => request.status === 200 && request.method === 'GET');
    expect(notices.all).toEqual([]);
    const warning = await log.waitFor((line) => String(line.msg).includes("spot-interruption notice failed"), signal);
    expect(warning).toMatchObject({ level: 'warn' });

    imds.setTargetLifecycleState('Terminated');
    expect(await notices.next(signal)).toEqual({ kind: 'scale-in' });
    expect(notices.all).toEqual([{ kind: 'scale-in' }]);
  });
});

describe('EC2 notices while IMDS is down', () => {
  it('logs the refused connections, keeps trying, and hears nothing', async () => {
    const watch = new AbortController();
    const log = captureLog();
    const notices = noticeQueue();
    const signal = AbortSignal.timeout(10_000);
    const endpoint = `http://127.0.0.1:${await freePort()}`;
    try {
      void watchAwsNotices({ imds: new ImdsClient({ endpoint }), pollMs: 20, logger: log.logger, onNotice: notices.onNotice, signal: watch.signal });
      expect(await log.waitFor((line) => String(line.msg).includes('notice failed'), signal)).toMatchObject({ level: 'warn' });
      // Tried again (and again), quietly.
      let retries = 0;
      await log.waitFor((line) => String(line.msg).includes('still failing') && ++retries >= 6, signal);
      expect(notices.all).toEqual([]);
    } finally {
      watch.abort();
    }
  });
});

describe('GCE notices from the metadata server', () => {
  let metadata: FakeGceMetadata;
  let restoreEnv: () => void;
  let watch: AbortController;
  beforeAll(async () => {
    metadata = await FakeGceMetadata.start();
    restoreEnv = setProcessEnv({ GCE_METADATA_HOST: metadata.host });
  });
  afterEach(() => watch.abort());
  afterAll(async () => {
    restoreEnv();
    await metadata.close();
  });

  it('long-polls with the last ETag and hears the preemption, with a deadline 30 s after it', async () => {
    watch = new AbortController();
    const notices = noticeQueue();
    const signal = AbortSignal.timeout(10_000);
    void watchGceNotices({ pollMs: 20, logger: captureLog().logger, onNotice: notices.onNotice, signal: watch.signal });
    while (metadata.waiting('instance/preempted') === 0) await once(metadata, 'request', { signal });
    const polls = metadata.requests.filter((request) => request.key === 'instance/preempted');
    expect(polls.map((request) => request.waitForChange)).toEqual([false, true]);
    expect(polls[1]?.lastEtag).toMatch(/^[0-9a-f]{16}$/);

    const before = Date.now();
    metadata.preempt();
    const notice = await notices.next(signal);
    expect(notice.kind).toBe('preemption');
    const deadline = (notice as { deadline: number }).deadline;
    expect(deadline).toBeGreaterThanOrEqual(before + PREEMPTION_NOTICE_MS);
    expect(deadline).toBeLessThanOrEqual(Date.now() + PREEMPTION_NOTICE_MS);
  });

  it('takes nothing from a server that fails or answers without its flavor header, and hears the maintenance once it answers again', async () => {
    watch = new AbortController();
    metadata.set('instance/preempted', 'FALSE');
    const log = captureLog();
    const notices = noticeQueue();
    const signal = AbortSignal.timeout(10_000);
    for (const mode of ['garbage', 'error'] as const) {
      metadata.mode = mode;
      if (mode === 'garbage') void watchGceNotices({ pollMs: 20, logger: log.logger, onNotice: notices.onNotice, signal: watch.signal });
      await answered<GceMetadataRequest>(metadata, 6, () => true);
    }
    metadata.set('instance/preempted', 'MAYBE');
    metadata.mode = 'ok';
    await answered<GceMetadataRequest>(metadata, 2, (request) => request.key === 'instance/preempted');
    expect(notices.all).toEqual([]);
    expect(await log.waitFor((line) => String(line.msg).includes('watching GCE'), signal)).toMatchObject({ level: 'warn' });

    metadata.maintenance('TERMINATE_ON_HOST_MAINTENANCE');
    expect(await notices.next(signal)).toMatchObject({ kind: 'maintenance' });
    expect(notices.all).toHaveLength(1);
  });
});
