import { definition } from '../../backends/ec2/index.js';
import { FakeEc2 } from '../fakes/ec2-server.js';
import { ec2Settings, registerDefaultImage } from '../fakes/ec2-settings.js';
import { testBackendContext } from '../helpers/backend-context.js';
import { describeBackendConformance } from './backend-conformance.js';

describeBackendConformance('ec2', async () => {
  const fake = await FakeEc2.start({ bootDelayMs: 50 });
  registerDefaultImage(fake);
  const backend = definition.create(ec2Settings(fake), testBackendContext());
  return {
    backend,
    // Pending, running or stopped instances: anything not (being) terminated.
    liveInstances: async () => fake.live().length,
    close: () => fake.close(),
  };
}, { warmPool: true });
