/**
 * `ec2`: a fresh EC2 instance per job (TRAVIS_WORKER_EC2_*), reached over
 * SSH with a key made for that job, tagged from the moment it exists and
 * terminated on every path. See docs/backends.md, `ec2`.
 */
import type { BackendDefinition } from '../../src/backend/kit.js';
import { Ec2Backend } from './backend.js';
import { settingFamilies, settingsSchema, validateSettings, type Ec2SettingFamilies, type Ec2Settings } from './settings.js';

export type { Ec2Settings } from './settings.js';
export { Ec2Backend } from './backend.js';

export const definition: BackendDefinition<Ec2Settings, Ec2SettingFamilies> = {
  name: 'ec2',
  description: 'runs each job on a fresh Amazon EC2 instance (on-demand or spot), terminated after the job',
  settings: settingsSchema,
  settingFamilies,
  validate: validateSettings,
  create: (settings, context) => new Ec2Backend(settings, context),
};
