/**
 * `qemu`: a real, throw-away VM per job on this host. Each job boots a
 * copy-on-write overlay of a golden qcow2 image, gets its SSH key through a
 * cloud-init NoCloud seed, and is reached over SSH (a loopback port
 * forward, or an address on the operator's bridge).
 */
import type { BackendDefinition } from '../../src/backend/kit.js';
import { QemuBackend, kvmUsable } from './backend.js';
import { settingsSchema, validateSettings, type QemuSettings } from './settings.js';

export type { QemuSettings } from './settings.js';
export { QemuBackend } from './backend.js';

export const definition: BackendDefinition<QemuSettings, 'images'> = {
  name: 'qemu',
  description: 'boots a throw-away QEMU VM per job from a golden qcow2 image on this host (KVM when there is one)',
  settings: settingsSchema,
  settingFamilies: {
    images: { prefix: 'IMAGE', doc: 'golden qcow2 image for jobs of image key <NAME> (e.g. IMAGE_DEFAULT=/var/lib/mayfly/images/jammy.qcow2; relative to IMAGE_DIR)' },
  },
  validate: validateSettings,
  create: (settings, context) => new QemuBackend(settings, context, kvmUsable()),
};
