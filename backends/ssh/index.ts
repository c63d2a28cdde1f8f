/**
 * `ssh`: runs each job on one of a fixed list of persistent hosts over SSH
 * (TRAVIS_WORKER_SSH_HOSTS), one job per host at a time. After each job the
 * script is removed and TRAVIS_WORKER_SSH_RESET_COMMAND, if set, is run;
 * hosts that keep failing are taken out of rotation for a while.
 */
import type { BackendDefinition } from '../../src/backend/kit.js';
import { SshBackend } from './backend.js';
import { settingsSchema, validateSettings, type SshBackendSettings } from './settings.js';

export type { SshBackendSettings } from './settings.js';
export { SshBackend } from './backend.js';

export const definition: BackendDefinition<SshBackendSettings> = {
  name: 'ssh',
  description: 'runs jobs on a fixed list of persistent hosts over SSH, one job per host at a time',
  settings: settingsSchema,
  validate: validateSettings,
  create: (settings, context) => new SshBackend(settings, context),
};
