/**
 * `gce`: a fresh Google Compute Engine VM per job (travis-ci/worker's
 * `gce` provider, same `TRAVIS_WORKER_GCE_*` settings), reached over SSH
 * with a key made for the job, deleted on every path.
 */
import type { BackendDefinition } from '../../src/backend/kit.js';
import { GceBackend } from './backend.js';
import { settingFamilies, settingsSchema, validateSettings, type GceFamilies, type GceSettings } from './settings.js';

export type { GceSettings } from './settings.js';
export { GceBackend } from './backend.js';

export const definition: BackendDefinition<GceSettings, GceFamilies> = {
  name: 'gce',
  description: 'a fresh Google Compute Engine VM per job, reached over SSH, deleted after the job',
  settings: settingsSchema,
  settingFamilies,
  validate: validateSettings,
  create: (settings, context) => new GceBackend(settings, context),
};
