/**
 * Jobs for the fault-injection suite (test/fault): payloads the job ledger
 * can follow, and build scripts that either outlast any fault or finish
 * with a log of several parts.
 */

/**
 * A job payload for `queue` with no `uuid`: the worker then makes one per
 * delivery, which is how the ledger tells a job's runs apart. Its script
 * comes from the build API (`FakeBuildApi.scripts`), or from `config.script`
 * when the worker has none.
 */
export function faultPayload(queue: string, jobId: number, config: Record<string, unknown> = { language: 'shell' }): string {
  return JSON.stringify({
    type: 'test',
    queue,
    config: { os: 'linux', dist: 'xenial', ...config },
    job: { id: jobId, number: `${jobId}.1`, queued_at: '2026-01-01T00:00:00Z' },
    source: { id: 1, number: '1' },
    repository: { id: 2, slug: 'octo/fault' },
    timeouts: { hard_limit: 600, log_silence: null },
  });
}

/** Prints a numbered line every 50 ms until killed: a fault injected once a line is logged surely lands mid-script. */
export const ENDLESS_SCRIPT = 'i=0; while true; do i=$((i + 1)); echo "line $i"; sleep 0.05; done';

/** Lines printed 50 ms apart for about three seconds, then success: long enough to cut the broker (or stop a node) in the middle. */
export const SLOW_SCRIPT = 'for i in $(seq 1 60); do echo "line $i"; sleep 0.05; done';

/** Numbered lines worth several log parts (1653 bytes each), then success. */
export const FINISHING_SCRIPT = 'for i in $(seq 1 500); do echo "line $i"; done';

/** The last line `FINISHING_SCRIPT` logs, as the PTY writes it. */
export const FINISHING_LAST_LINE = 'line 500\r\n';
