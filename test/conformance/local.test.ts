import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { definition as local } from '../../backends/local/index.js';
import { describeBackendConformance } from './backend-conformance.js';
import { testBackendContext } from '../helpers/backend-context.js';

describeBackendConformance('local', async () => {
  const scriptsDir = await mkdtemp(join(tmpdir(), 'mayfly-conformance-local-'));
  return {
    backend: local.create({ scriptsDir, containment: 'auto' }, testBackendContext()),
    liveInstances: async () => (await readdir(scriptsDir)).length,
    close: () => rm(scriptsDir, { recursive: true, force: true }),
  };
});
