/**
 * Getting a job's build script: from the build API when
 * `TRAVIS_WORKER_BUILD_API_URI` is set (script-http.ts), otherwise from the
 * built-in generator (script-builtin.ts).
 */
import type { BuildApiConfig } from '../config/types.js';
import type { Logger } from '../logger.js';
import type { JobPayload } from './payload.js';
import { BuiltinScriptGenerator } from './script-builtin.js';
import { HttpScriptGenerator } from './script-http.js';

export { MAX_SCRIPT_BYTES } from './script-http.js';

export interface ScriptGenerator {
  /**
   * The bash script that runs the job. Rejects with ScriptRejectedError or
   * ScriptTooLargeError (the job can't be run: it ends errored), ScriptUnavailableError (try
   * again elsewhere: requeue), PayloadError (built-in generator: a mistyped
   * `config` field), or `signal.reason` once `signal` aborts.
   */
  generate(payload: JobPayload, signal: AbortSignal): Promise<Buffer>;
}

export function createScriptGenerator(config: BuildApiConfig, logger: Logger): ScriptGenerator {
  const { uri } = config;
  return uri ? new HttpScriptGenerator({ ...config, uri }, logger) : new BuiltinScriptGenerator();
}
