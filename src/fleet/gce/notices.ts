/**
 * GCE's notices, from the metadata server's long polls
 * (`?wait_for_change=true&last_etag=...`: the answer comes when the value
 * changes, or after `timeout_sec` with the same value):
 *
 *   instance/preempted            TRUE once the VM is being preempted: it stops about 30 s later
 *   instance/maintenance-event    TERMINATE_ON_HOST_MAINTENANCE 60 s before the VM is stopped for
 *                                 maintenance (MIGRATE_ON_HOST_MAINTENANCE: a live migration, the VM stays)
 *
 * The host is `GCE_METADATA_IP` or `GCE_METADATA_HOST`, as Google's own
 * libraries (gcp-metadata) read them. Not gcp-metadata itself: it hides the
 * ETag (without `last_etag` a change between two polls is missed) and takes
 * no AbortSignal, so a hanging poll would hold the worker's exit.
 *
 * Every answer must carry `Metadata-Flavor: Google` and an ETag and be one
 * of the values above; anything else, like a failed poll, is logged and the
 * poll starts over after `TRAVIS_WORKER_HOST_NOTICE_POLL_INTERVAL`.
 */
import { errorMessage, HostMetadataError } from '../../errors.js';
import type { Logger } from '../../logger.js';
import { abortableSleep } from '../../util/abort.js';
import { MetadataFailures, type HostNotice } from '../notices.js';

/** GCE stops a preempted VM about 30 s after the notice (Compute Engine docs, "Preemption process"). */
export const PREEMPTION_NOTICE_MS = 30_000;
/** GCE changes `maintenance-event` 60 s before the maintenance (Compute Engine docs, "Monitor maintenance events"). */
export const MAINTENANCE_NOTICE_MS = 60_000;
/** How long one long poll may hang at the server, in seconds; the request gets a little longer. */
const LONG_POLL_SECONDS = 60;
const REQUEST_SLACK_MS = 5_000;
/** The metadata server's link-local address, as gcp-metadata defaults to it; only read when HOST_CLOUD=gce. */
const DEFAULT_METADATA_HOST = '169.254.169.254';

interface Watched {
  key: string;
  /** The notice a value means, given when it was heard; undefined for no notice. Throws for a value GCE never sends. */
  notice(value: string, heardAt: number): HostNotice | undefined;
}

const WATCHED: readonly Watched[] = [
  {
    key: 'instance/preempted',
    notice(value, heardAt) {
      if (value === 'FALSE') return undefined;
      if (value === 'TRUE') return { kind: 'preemption', deadline: heardAt + PREEMPTION_NOTICE_MS };
      throw new HostMetadataError(`metadata instance/preempted: "${value.slice(0, 40)}" is neither TRUE nor FALSE`);
    },
  },
  {
    key: 'instance/maintenance-event',
    notice(value, heardAt) {
      if (value === 'NONE' || value === 'MIGRATE_ON_HOST_MAINTENANCE') return undefined;
      if (value === 'TERMINATE_ON_HOST_MAINTENANCE') return { kind: 'maintenance', deadline: heardAt + MAINTENANCE_NOTICE_MS };
      throw new HostMetadataError(`metadata instance/maintenance-event: "${value.slice(0, 40)}" is no maintenance event`);
    },
  },
];

/** `http://host[:port]` of the metadata server. */
function metadataBase(): string {
  const host = process.env['GCE_METADATA_IP'] || process.env['GCE_METADATA_HOST'] || DEFAULT_METADATA_HOST;
  return /^https?:\/\//.test(host) ? host.replace(/\/+$/, '') : `http://${host}`;
}

/** One read of `key`: at once, or (with `etag`) once it differs from the value of that ETag. */
async function read(key: string, etag: string | undefined, signal: AbortSignal): Promise<{ value: string; etag: string }> {
  const query = etag === undefined ? '' : `?wait_for_change=true&last_etag=${encodeURIComponent(etag)}&timeout_sec=${LONG_POLL_SECONDS}`;
  let response: Response;
  try {
    response = await fetch(`${metadataBase()}/computeMetadata/v1/${key}${query}`, {
      headers: { 'Metadata-Flavor': 'Google' },
      redirect: 'error',
      signal: AbortSignal.any([signal, AbortSignal.timeout(LONG_POLL_SECONDS * 1000 + REQUEST_SLACK_MS)]),
    });
  } catch (err) {
    signal.throwIfAborted();
    throw new HostMetadataError(`metadata ${key}: ${errorMessage(err)}`, { cause: err });
  }
  const text = await response.text();
  if (response.status !== 200) throw new HostMetadataError(`metadata ${key}: HTTP ${response.status}`);
  // The server sets it on every answer; without it, something else answered (a proxy, a captive portal).
  if (response.headers.get('metadata-flavor') !== 'Google') throw new HostMetadataError(`metadata ${key}: the answer lacks Metadata-Flavor: Google`);
  const newEtag = response.headers.get('etag');
  if (!newEtag) throw new HostMetadataError(`metadata ${key}: the answer has no ETag`);
  return { value: text.trim(), etag: newEtag };
}

async function watchOne(watched: Watched, pollMs: number, logger: Logger, onNotice: (notice: HostNotice) => void, signal: AbortSignal): Promise<void> {
  const failures = new MetadataFailures(logger, `watching GCE's ${watched.key}`);
  let etag: string | undefined;
  while (!signal.aborted) {
    try {
      const answer = await read(watched.key, etag, signal);
      const notice = watched.notice(answer.value, Date.now());
      failures.succeeded();
      etag = answer.etag;
      if (notice !== undefined) {
        onNotice(notice);
        return;
      }
    } catch (err) {
      if (signal.aborted) return;
      failures.failed(err, pollMs);
      etag = undefined;
      await abortableSleep(pollMs, signal).catch(() => undefined);
    }
  }
}

export interface GceNoticeOptions {
  pollMs: number;
  logger: Logger;
  /** Called once per kind of notice. */
  onNotice: (notice: HostNotice) => void;
  signal: AbortSignal;
}

/** Long-poll GCE's notices until `signal` aborts (or each has been heard). */
export async function watchGceNotices({ pollMs, logger, onNotice, signal }: GceNoticeOptions): Promise<void> {
  await Promise.all(WATCHED.map((watched) => watchOne(watched, pollMs, logger, onNotice, signal)));
}
