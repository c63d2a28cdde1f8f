import type { StartAttributes } from '../../src/backend/contract.js';

/** Start attributes of a plain linux job, for backend tests; override what a test is about. */
export function testAttributes(overrides: Partial<StartAttributes> = {}): StartAttributes {
  return {
    jobId: 4242,
    repository: 'octo/repo',
    language: 'default',
    dist: 'xenial',
    arch: 'amd64',
    group: 'stable',
    os: 'linux',
    vmType: 'default',
    vmConfig: {},
    hardTimeoutMs: 10 * 60_000,
    warmer: false,
    ...overrides,
  };
}
