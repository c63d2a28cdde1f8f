/**
 * What a failed Compute API call means. The REST transport of
 * `@google-cloud/compute` rejects with a GaxiosError whose status is the
 * HTTP status and whose message is the API's JSON error body
 * (`{"error":{"code":403,"message":"...","errors":[{"reason":"quotaExceeded"}]}}`);
 * a finished operation carries its own error list (`ZONE_RESOURCE_POOL_EXHAUSTED`).
 */
import type { CloudErrorKind } from '../../src/backend/kit.js';

/** An insert or delete operation that finished with errors. */
export class GceOperationError extends Error {
  constructor(
    readonly operation: string,
    /** The `code`s of the operation's errors, e.g. `ZONE_RESOURCE_POOL_EXHAUSTED`. */
    readonly codes: string[],
    detail: string,
  ) {
    super(`operation ${operation} failed: ${detail}`);
    this.name = 'GceOperationError';
  }
}

const THROTTLED = new Set(['ratelimitexceeded', 'userratelimitexceeded', 'rate_limit_exceeded']);
const QUOTA = new Set(['quotaexceeded', 'quota_exceeded', 'resource_exhausted_quota']);
const CAPACITY = new Set([
  'zone_resource_pool_exhausted',
  'zone_resource_pool_exhausted_with_details',
  'resource_pool_exhausted',
  'resourcepoolexhausted',
  'stockout',
  'resource_not_available',
]);
/** Socket-level failures worth another try. */
const NETWORK_CODES = new Set(['ECONNRESET', 'ECONNREFUSED', 'ETIMEDOUT', 'EPIPE', 'EAI_AGAIN', 'ENOTFOUND', 'ECONNABORTED', 'UND_ERR_SOCKET']);

interface ParsedError {
  status?: number;
  reasons: string[];
  networkCode?: string;
}

function asRecord(value: unknown): Record<string, unknown> | undefined {
  return typeof value === 'object' && value !== null ? (value as Record<string, unknown>) : undefined;
}

/** The reasons of a JSON error body (`error.errors[].reason`, `error.status`), if `text` is one. */
function reasonsOfBody(text: string): { status?: number; reasons: string[] } {
  const start = text.indexOf('{');
  if (start < 0) return { reasons: [] };
  try {
    const error = asRecord(asRecord(JSON.parse(text.slice(start)))?.['error']);
    if (!error) return { reasons: [] };
    const reasons = (Array.isArray(error['errors']) ? error['errors'] : [])
      .map((entry) => asRecord(entry)?.['reason'])
      .filter((reason): reason is string => typeof reason === 'string');
    if (typeof error['status'] === 'string') reasons.push(error['status']);
    return typeof error['code'] === 'number' ? { status: error['code'], reasons } : { reasons };
  } catch {
    return { reasons: [] };
  }
}

function parse(err: unknown): ParsedError {
  const record = asRecord(err);
  if (!record) return { reasons: [] };
  const result: ParsedError = { reasons: [] };
  const response = asRecord(record['response']);
  for (const candidate of [record['status'], response?.['status'], record['code']]) {
    if (typeof candidate === 'number' && candidate >= 100 && candidate < 600) {
      result.status = candidate;
      break;
    }
  }
  for (const candidate of [record['code'], record['errno'], asRecord(record['error'])?.['code'], asRecord(record['cause'])?.['code']]) {
    if (typeof candidate === 'string' && NETWORK_CODES.has(candidate)) result.networkCode = candidate;
  }
  if (typeof record['message'] === 'string') {
    const body = reasonsOfBody(record['message']);
    result.reasons.push(...body.reasons);
    if (result.status === undefined && body.status !== undefined) result.status = body.status;
  }
  if (typeof record['reason'] === 'string') result.reasons.push(record['reason']);
  return result;
}

/** Classify anything the Compute SDK (or an operation) threw. */
export function classifyGceError(err: unknown): CloudErrorKind {
  if (err instanceof GceOperationError) {
    const codes = err.codes.map((code) => code.toLowerCase());
    if (codes.some((code) => QUOTA.has(code))) return 'quota';
    if (codes.some((code) => CAPACITY.has(code))) return 'capacity';
    return 'fatal';
  }
  const { status, reasons, networkCode } = parse(err);
  const lower = reasons.map((reason) => reason.toLowerCase());
  if (lower.some((reason) => THROTTLED.has(reason))) return 'throttled';
  if (lower.some((reason) => QUOTA.has(reason))) return 'quota';
  if (lower.some((reason) => CAPACITY.has(reason))) return 'capacity';
  if (status === 429) return 'throttled';
  if (status === 404) return 'not-found';
  if (status !== undefined && status >= 500) return 'transient';
  if (networkCode !== undefined) return 'transient';
  if (err instanceof Error && /socket hang up|network|timed? ?out/i.test(err.message) && status === undefined) return 'transient';
  return 'fatal';
}

/**
 * Whether an insert was refused because its zone does not offer the machine
 * or accelerator type (not every zone has every family or GPU): a 400 that
 * says "... does not exist in zone ...". Another zone may offer it.
 */
export function notOfferedInZone(err: unknown): boolean {
  const { status } = parse(err);
  return status === 400 && err instanceof Error && /does not exist in zone/i.test(err.message);
}

/**
 * Whether an insert was refused because its network is a custom-mode VPC
 * and the interface named no subnetwork (GCE: "Subnetwork should be
 * specified for custom subnetmode network"): only SUBNETWORK mends it.
 */
export function needsSubnetwork(err: unknown): boolean {
  const { status } = parse(err);
  return status === 400 && err instanceof Error && /subnetwork should be specified for custom subnetmode network/i.test(err.message);
}
