/**
 * Job payload parsing (docs/protocol.md, "The job payload"). Three outcomes:
 * - rejected: not a job at all (not UTF-8, not JSON, not an object, no
 *   usable `job.id`, too large or too deeply nested): it can't be reported
 *   or processed, so the delivery is dropped to the dead-letter route with
 *   the reason in the worker log, never requeued;
 * - invalid: a job we can name but not run (a field of the wrong type):
 *   it ends `errored` with the field named in its log;
 * - ok.
 * Fields the worker does not read are left untouched in `raw`, which is what
 * the build API receives.
 */
import { z } from 'zod';
import { PayloadError } from '../errors.js';
import { invalidJsonProblem } from '../redact.js';
import { MAX_TIMER_MS } from '../util/timers.js';

/**
 * Twice the largest payloads seen in practice (a few hundred kB with big
 * env_vars and ssh keys); bigger ones are certainly corrupt or hostile.
 */
export const DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024;

/**
 * Deepest nesting of arrays and objects a payload may have. travis payloads
 * nest under ten levels (payload > config > jobs > include > item > env >
 * ...); 64 leaves ample room and stays far below the thousands of levels at
 * which recursive code (JSON.stringify for the build API, schema checks)
 * runs out of stack.
 */
export const MAX_PAYLOAD_NESTING = 64;

export interface JobPayload {
  /** The payload exactly as received, for the build API. */
  raw: Record<string, unknown>;
  jobId: number;
  jobNumber?: string;
  /** Request id; travis generates one when the producer did not. */
  uuid?: string;
  repositorySlug: string;
  queuedAt?: Date;
  /** `job.queued_at` exactly as the payload has it, for the first log part's meta. */
  queuedAtText?: string;
  /** The job's `config` object (language, dist, script, ...). */
  config: Record<string, unknown>;
  /** `timeouts.hard_limit` in ms; undefined means the worker's default. */
  hardLimitMs?: number;
  /** `timeouts.log_silence` in ms; undefined means the worker's default. */
  logSilenceMs?: number;
  vmType: string;
  vmSize?: string;
  vmConfig: { gpuCount?: number; gpuType?: string; zone?: string };
  /** `meta.state_update_count`: where this delivery's state numbering starts. */
  stateUpdateCount: number;
  queue?: string;
  trace: boolean;
  warmer: boolean;
  /** Set when the payload names a job but can't be run; the job ends `errored`. */
  invalid?: PayloadError;
}

export type ParsedDelivery =
  | { kind: 'ok'; payload: JobPayload }
  | { kind: 'rejected'; reason: string };

const optionalString = z.string().nullish();
/** The longest payload timeout, in seconds: the worker turns it into a timer. */
const MAX_TIMEOUT_SECONDS = MAX_TIMER_MS / 1000;
const seconds = z.number().nonnegative().max(MAX_TIMEOUT_SECONDS, `must be at most ${MAX_TIMEOUT_SECONDS} seconds`).nullish();

const jobIdSchema = z.object({
  job: z.object({ id: z.number().int().positive().max(Number.MAX_SAFE_INTEGER) }, 'must be an object'),
});

const payloadSchema = z.object({
  uuid: optionalString,
  queue: optionalString,
  trace: z.boolean().nullish(),
  warmer: z.boolean().nullish(),
  vm_type: optionalString,
  vm_size: optionalString,
  vm_config: z
    .object({
      gpu_count: z.number().int().nonnegative().nullish(),
      gpu_type: optionalString,
      zone: optionalString,
    })
    .nullish(),
  job: z.object({
    number: z.union([z.string(), z.number()]).nullish(),
    queued_at: z.iso.datetime({ offset: true }).nullish(),
  }),
  repository: z.object({ slug: z.string() }).nullish(),
  config: z
    .object({
      language: optionalString,
      dist: optionalString,
      arch: optionalString,
      group: optionalString,
      os: optionalString,
      osx_image: optionalString,
      image_name: optionalString,
    })
    .loose()
    .nullish(),
  timeouts: z.object({ hard_limit: seconds, log_silence: seconds }).nullish(),
  meta: z.object({ state_update_count: z.number().int().nonnegative().nullish() }).nullish(),
});

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Whether `json` nests arrays and objects more than `limit` deep: counted
 * without recursion, before parsing, brackets inside strings left out.
 */
function nestsDeeperThan(json: string, limit: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < json.length; i++) {
    const char = json.charCodeAt(i);
    if (inString) {
      if (char === 0x5c /* \ */) i++;
      else if (char === 0x22 /* " */) inString = false;
    } else if (char === 0x22) {
      inString = true;
    } else if (char === 0x5b /* [ */ || char === 0x7b /* { */) {
      if (++depth > limit) return true;
    } else if (char === 0x5d /* ] */ || char === 0x7d /* } */) {
      depth--;
    }
  }
  return false;
}

function firstIssue(error: z.ZodError): { field: string; problem: string } {
  const issue = error.issues[0];
  return {
    field: issue && issue.path.length > 0 ? issue.path.join('.') : '(payload)',
    problem: issue?.message ?? 'invalid',
  };
}

/** Seconds from the payload to ms; 0 and null mean "use the worker's default". */
function secondsToMs(value: number | null | undefined): number | undefined {
  return value ? Math.round(value * 1000) : undefined;
}

export function parseJobPayload(body: Uint8Array, maxBytes = DEFAULT_MAX_PAYLOAD_BYTES): ParsedDelivery {
  if (body.byteLength > maxBytes) {
    return { kind: 'rejected', reason: `payload is ${body.byteLength} bytes, over the ${maxBytes}-byte limit` };
  }
  let text: string;
  try {
    text = strictUtf8.decode(body);
  } catch {
    return { kind: 'rejected', reason: 'payload is not valid UTF-8' };
  }
  if (nestsDeeperThan(text, MAX_PAYLOAD_NESTING)) {
    return { kind: 'rejected', reason: `payload nests deeper than ${MAX_PAYLOAD_NESTING} levels` };
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    return { kind: 'rejected', reason: `payload is ${invalidJsonProblem(err)}` };
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    return { kind: 'rejected', reason: 'payload is not a JSON object' };
  }
  const withId = jobIdSchema.safeParse(raw);
  if (!withId.success) {
    const { field, problem } = firstIssue(withId.error);
    return { kind: 'rejected', reason: `payload has no usable job id: ${field}: ${problem}` };
  }
  const record = raw as Record<string, unknown>;
  const jobId = withId.data.job.id;
  const parsed = payloadSchema.safeParse(raw);
  if (!parsed.success) {
    const { field, problem } = firstIssue(parsed.error);
    return {
      kind: 'ok',
      payload: {
        raw: record,
        jobId,
        repositorySlug: '',
        config: {},
        vmType: 'default',
        vmConfig: {},
        stateUpdateCount: 0,
        trace: false,
        warmer: false,
        invalid: new PayloadError(field, problem),
      },
    };
  }
  const p = parsed.data;
  const payload: JobPayload = {
    raw: record,
    jobId,
    repositorySlug: p.repository?.slug ?? '',
    config: p.config ?? {},
    vmType: p.vm_type || 'default',
    vmConfig: {},
    stateUpdateCount: p.meta?.state_update_count ?? 0,
    trace: p.trace ?? false,
    warmer: p.warmer ?? false,
  };
  if (p.job.number != null) payload.jobNumber = String(p.job.number);
  if (p.uuid) payload.uuid = p.uuid;
  if (p.queue) payload.queue = p.queue;
  if (p.job.queued_at) {
    payload.queuedAt = new Date(p.job.queued_at);
    payload.queuedAtText = p.job.queued_at;
  }
  if (p.vm_size) payload.vmSize = p.vm_size;
  if (p.vm_config?.gpu_count != null) payload.vmConfig.gpuCount = p.vm_config.gpu_count;
  if (p.vm_config?.gpu_type) payload.vmConfig.gpuType = p.vm_config.gpu_type;
  if (p.vm_config?.zone) payload.vmConfig.zone = p.vm_config.zone;
  const hardLimitMs = secondsToMs(p.timeouts?.hard_limit);
  if (hardLimitMs !== undefined) payload.hardLimitMs = hardLimitMs;
  const logSilenceMs = secondsToMs(p.timeouts?.log_silence);
  if (logSilenceMs !== undefined) payload.logSilenceMs = logSilenceMs;
  return { kind: 'ok', payload };
}
