/**
 * An EC2 host in its Auto Scaling group, for a describe block: the fake
 * Auto Scaling API and a fake IMDSv2 handing out the instance profile's
 * credentials for it, both on loopback, with the SDKs' standard endpoint
 * variables pointing at them (set before the tests, put back after).
 */
import { afterAll, beforeAll } from 'vitest';
import { FakeAutoScaling } from '../fakes/autoscaling-server.js';
import { FakeImds } from '../fakes/imds-server.js';
import { setProcessEnv } from './process-env.js';

export interface AwsHostFixture {
  readonly autoScaling: FakeAutoScaling;
  readonly imds: FakeImds;
}

export function useAwsHost(): AwsHostFixture {
  let autoScaling: FakeAutoScaling | undefined;
  let imds: FakeImds | undefined;
  let restoreEnv: (() => void) | undefined;
  beforeAll(async () => {
    autoScaling = await FakeAutoScaling.start();
    imds = await FakeImds.start({ credentials: autoScaling });
    restoreEnv = setProcessEnv({ AWS_EC2_METADATA_SERVICE_ENDPOINT: imds.endpoint, AWS_ENDPOINT_URL_AUTO_SCALING: autoScaling.endpoint });
  });
  afterAll(async () => {
    restoreEnv?.();
    await Promise.all([autoScaling?.close(), imds?.close()]);
  });
  const started = <T>(fake: T | undefined): T => {
    if (fake === undefined) throw new Error('the fakes start in beforeAll: use them inside a test');
    return fake;
  };
  return {
    get autoScaling() {
      return started(autoScaling);
    },
    get imds() {
      return started(imds);
    },
  };
}
