import { definition as gce } from '../../backends/gce/index.js';
import { FakeGce } from '../fakes/gce-server.js';
import { gceSettings, travisImages } from '../fakes/gce-settings.js';
import { testBackendContext } from '../helpers/backend-context.js';
import { describeBackendConformance } from './backend-conformance.js';

describeBackendConformance('gce', async () => {
  const fake = await FakeGce.start({ images: travisImages() });
  const backend = gce.create(gceSettings(fake), testBackendContext());
  return {
    backend,
    liveInstances: async () => fake.liveInstances().length,
    close: () => fake.close(),
  };
}, { warmPool: true });
