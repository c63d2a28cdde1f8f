/**
 * `docker`: one container per job on a local or remote Docker engine
 * (TRAVIS_WORKER_DOCKER_ENDPOINT), reached over SSH with a fresh key per job,
 * or driven through the Engine API alone (TRAVIS_WORKER_DOCKER_NATIVE=true).
 */
import type { BackendDefinition } from '../../src/backend/kit.js';
import { DockerBackend } from './backend.js';
import { settingsSchema, validateSettings, type DockerSettings } from './settings.js';

export type { DockerSettings } from './settings.js';
export { DockerBackend, LABELS, containerName } from './backend.js';

export const definition: BackendDefinition<DockerSettings, 'images'> = {
  name: 'docker',
  description: 'runs each job in a fresh container on a Docker engine, over SSH or through the Engine API (native)',
  settings: settingsSchema,
  settingFamilies: {
    images: { prefix: 'IMAGE', doc: 'image for jobs of language <NAME> (e.g. IMAGE_RUBY=travis:ruby); with the env selector, IMAGE_DEFAULT too' },
  },
  validate: validateSettings,
  create: (settings, context) => new DockerBackend(settings, context),
};
