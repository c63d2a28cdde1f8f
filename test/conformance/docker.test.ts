/**
 * The docker backend against the real test engine, in both ways of running
 * a script: over SSH into the container, and natively (archive + exec).
 * An instance is live while a container labelled with this file's worker
 * name exists, running or not.
 */
import { definition as docker } from '../../backends/docker/index.js';
import type { DockerSettings } from '../../backends/docker/settings.js';
import { testBackendContext } from '../helpers/backend-context.js';
import { containersOf, describeWithDocker, dockerUnavailable, removeContainersOf, testDockerSettings, testEngine, testWorkerName } from '../helpers/docker.js';
import { describeBackendConformance, type ConformanceTarget } from './backend-conformance.js';

const unavailable = await dockerUnavailable();

function target(overrides: Partial<DockerSettings>): () => Promise<ConformanceTarget> {
  return async () => {
    const worker = testWorkerName();
    const engine = testEngine();
    return {
      backend: docker.create(testDockerSettings(overrides), testBackendContext({ hostname: worker })),
      liveInstances: async () => (await containersOf(engine, worker)).length,
      close: async () => {
        await removeContainersOf(engine, worker);
        await engine.api.close();
      },
    };
  };
}

describeWithDocker('docker backend (real engine)', unavailable, () => {
  describeBackendConformance('docker over ssh', target({}), { warmPool: true });
  describeBackendConformance('docker native, with a terminal', target({ native: true }), { warmPool: true });
  describeBackendConformance('docker native, demultiplexed', target({ native: true, nativeTty: false }), { warmPool: true });
});
