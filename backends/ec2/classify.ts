/**
 * What an EC2 API failure means, for `CloudApi` (retry or not) and for the
 * job (requeue with "no capacity" or "quota", or fail the start). EC2 error
 * codes are listed in the EC2 API reference, "Error codes"; note that EC2
 * answers some capacity errors with HTTP 500, so codes win over status.
 */
import type { CloudErrorKind } from '../../src/backend/kit.js';

const THROTTLED = new Set(['RequestLimitExceeded', 'Throttling', 'ThrottlingException', 'RequestThrottled', 'TooManyRequestsException']);
const TRANSIENT = new Set(['InternalError', 'InternalFailure', 'ServiceUnavailable', 'Unavailable', 'RequestTimeout', 'RequestTimeoutException']);
const QUOTA = new Set([
  'InstanceLimitExceeded',
  'VcpuLimitExceeded',
  'MaxSpotInstanceCountExceeded',
  'ResourceLimitExceeded',
  'VolumeLimitExceeded',
]);
const CAPACITY = new Set([
  'InsufficientInstanceCapacity',
  'InsufficientHostCapacity',
  'InsufficientReservedInstanceCapacity',
  'InsufficientCapacity',
  'InsufficientFreeAddressesInSubnet',
  'SpotMaxPriceTooLow',
]);
/**
 * `Unsupported` is capacity only when it is about the zone ("Your requested
 * instance type is not supported in your requested Availability Zone"); it
 * also answers configurations EC2 can't launch anywhere ("The requested
 * configuration is currently not supported"), which no retry mends.
 */
const UNSUPPORTED = 'Unsupported';
const ABOUT_THE_ZONE = /availability zone/i;
/** Errors of the socket or the HTTP client, not of EC2: the request may never have arrived. */
const NETWORK_CODES = new Set(['ECONNRESET', 'ECONNREFUSED', 'ECONNABORTED', 'EPIPE', 'ETIMEDOUT', 'EAI_AGAIN', 'ENETUNREACH', 'EHOSTUNREACH']);
const NETWORK_NAMES = new Set(['TimeoutError', 'AbortError', 'NetworkingError']);

/** The EC2 error code of an SDK error (`name` is the code for modelled and unmodelled service errors). */
export function ec2ErrorCode(err: unknown): string | undefined {
  if (typeof err !== 'object' || err === null) return undefined;
  const { Code, name } = err as { Code?: unknown; name?: unknown };
  if (typeof Code === 'string') return Code;
  return typeof name === 'string' ? name : undefined;
}

/** `Unsupported` that is not about the zone: EC2 launches this configuration in no zone, now or on a retry. */
export function isUnsupportedAnywhere(err: unknown): boolean {
  return ec2ErrorCode(err) === UNSUPPORTED && !(err instanceof Error && ABOUT_THE_ZONE.test(err.message));
}

export function classifyEc2Error(err: unknown): CloudErrorKind {
  const code = ec2ErrorCode(err) ?? '';
  if (THROTTLED.has(code)) return 'throttled';
  if (QUOTA.has(code)) return 'quota';
  if (CAPACITY.has(code)) return 'capacity';
  if (code === UNSUPPORTED) return isUnsupportedAnywhere(err) ? 'fatal' : 'capacity';
  if (code.endsWith('.NotFound')) return 'not-found';
  if (TRANSIENT.has(code)) return 'transient';
  const details = (typeof err === 'object' && err !== null ? err : {}) as {
    $metadata?: { httpStatusCode?: number };
    code?: unknown;
  };
  const status = details.$metadata?.httpStatusCode;
  if (status === 429) return 'throttled';
  if (status !== undefined && status >= 500) return 'transient';
  if (typeof details.code === 'string' && NETWORK_CODES.has(details.code)) return 'transient';
  if (NETWORK_NAMES.has(code)) return 'transient';
  return 'fatal';
}
