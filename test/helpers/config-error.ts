/** Loading a configuration that must be refused. */
import { expect } from 'vitest';
import { loadConfig } from '../../src/config/load.js';
import type { AnyBackendDefinition } from '../../src/config/types.js';
import { ConfigError } from '../../src/errors.js';

/** Loads `env` and expects a `ConfigError`; returns its message. */
export function configErrorOf(env: NodeJS.ProcessEnv, backends: readonly AnyBackendDefinition[]): string {
  let thrown: unknown;
  try {
    loadConfig(backends, env);
  } catch (err) {
    thrown = err;
  }
  expect(thrown).toBeInstanceOf(ConfigError);
  return (thrown as ConfigError).message;
}
