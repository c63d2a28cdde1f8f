import type { ApiCallOutcome, BackendContext } from '../../src/backend/contract.js';
import { silentLogger } from '../../src/logger.js';

export interface RecordedApiCall {
  operation: string;
  outcome: ApiCallOutcome;
}

/** A backend context for tests: silent logs, and the API calls the backend reports, kept in `apiCalls`. */
export function testBackendContext(overrides: Partial<BackendContext> = {}): BackendContext & { apiCalls: RecordedApiCall[] } {
  const apiCalls: RecordedApiCall[] = [];
  return {
    logger: silentLogger,
    hostname: 'test-worker',
    metrics: { apiCall: (operation, outcome) => apiCalls.push({ operation, outcome }) },
    apiCalls,
    ...overrides,
  };
}
