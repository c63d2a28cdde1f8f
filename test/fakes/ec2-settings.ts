/**
 * The `ec2` backend pointed at a `FakeEc2`, configured the way an operator
 * would (TRAVIS_WORKER_EC2_* variables through the real loader), with short
 * polls so tests wait for events, not for production pauses.
 */
import { userInfo } from 'node:os';
import { definition, type Ec2Settings } from '../../backends/ec2/index.js';
import { loadConfig } from '../../src/config/load.js';
import type { FakeEc2 } from './ec2-server.js';

/** The name of the AMI `registerDefaultImage` registers; IMAGE_DEFAULT in `ec2Env`. */
export const DEFAULT_IMAGE_NAME = 'travis-ci-default-xenial-1700000000';

export function registerDefaultImage(fake: FakeEc2): string {
  return fake.registerImage({ name: DEFAULT_IMAGE_NAME, creationDate: '2023-11-14T22:13:20.000Z' });
}

/** TRAVIS_WORKER_EC2_* for the fake, plus `extra` (which wins). */
export function ec2Env(fake: FakeEc2, extra: Record<string, string> = {}): Record<string, string> {
  return {
    TRAVIS_WORKER_EC2_ENDPOINT: fake.endpoint,
    TRAVIS_WORKER_EC2_REGION: fake.region,
    TRAVIS_WORKER_EC2_AWS_ACCESS_KEY_ID: fake.accessKeyId,
    TRAVIS_WORKER_EC2_AWS_SECRET_ACCESS_KEY: fake.secretAccessKey,
    TRAVIS_WORKER_EC2_IMAGE_DEFAULT: 'travis-ci-default-xenial-*',
    // The fake's sshd lets the test process's own user in (root here); travis images use `travis`.
    TRAVIS_WORKER_EC2_SSH_USER: userInfo().username,
    TRAVIS_WORKER_EC2_BOOT_POLL_SLEEP: '50ms',
    TRAVIS_WORKER_EC2_UPLOAD_RETRIES: '50',
    TRAVIS_WORKER_EC2_UPLOAD_RETRY_SLEEP: '100ms',
    TRAVIS_WORKER_EC2_SSH_DIAL_TIMEOUT: '2s',
    TRAVIS_WORKER_EC2_INTERRUPTION_POLL_SLEEP: '200ms',
    TRAVIS_WORKER_EC2_RATE_LIMIT_MAX_CALLS: '200',
    ...extra,
  };
}

/** Settings as the loader makes them from `ec2Env(fake, extra)`. */
export function ec2Settings(fake: FakeEc2, extra: Record<string, string> = {}): Ec2Settings {
  const config = loadConfig([definition], { TRAVIS_WORKER_PROVIDER_NAME: 'ec2', ...ec2Env(fake, extra) });
  return config.backendSettings as unknown as Ec2Settings;
}
