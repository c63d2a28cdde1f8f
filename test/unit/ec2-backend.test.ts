import { describe, expect, it } from 'vitest';
import { classifyEc2Error } from '../../backends/ec2/classify.js';
import { definition } from '../../backends/ec2/index.js';
import { imageSetting } from '../../backends/ec2/images.js';
import { mappedInstanceType } from '../../backends/ec2/launch.js';
import { decodeUserData, parseCustomTags } from '../../backends/ec2/settings.js';
import { buildUserData } from '../../backends/ec2/user-data.js';
import { loadConfig } from '../../src/config/load.js';
import { InstanceStartError } from '../../src/errors.js';
import { testAttributes } from '../helpers/attributes.js';

/** An SDK service error as @aws-sdk/client-ec2 builds it from EC2's XML. */
function serviceError(code: string, status: number): Error {
  return Object.assign(new Error(`${code} happened`), { name: code, Code: code, $fault: status >= 500 ? 'server' : 'client', $metadata: { httpStatusCode: status } });
}

describe('classifyEc2Error', () => {
  it.each([
    ['RequestLimitExceeded', 503, 'throttled'],
    ['Throttling', 400, 'throttled'],
    ['InternalError', 500, 'transient'],
    ['Unavailable', 503, 'transient'],
    ['SomethingNew', 502, 'transient'],
    ['InstanceLimitExceeded', 400, 'quota'],
    ['VcpuLimitExceeded', 400, 'quota'],
    // EC2 answers a capacity shortage with a 500: the code must win over the status.
    ['InsufficientInstanceCapacity', 500, 'capacity'],
    ['InvalidInstanceID.NotFound', 400, 'not-found'],
    ['InvalidParameterValue', 400, 'fatal'],
    ['AuthFailure', 401, 'fatal'],
  ])('%s (HTTP %i) is %s', (code, status, kind) => {
    expect(classifyEc2Error(serviceError(code, status))).toBe(kind);
  });

  it('takes Unsupported for capacity only when it is about the zone', () => {
    const unsupported = (message: string): Error => Object.assign(serviceError('Unsupported', 400), { message });
    expect(classifyEc2Error(unsupported('Your requested instance type is not supported in your requested Availability Zone.'))).toBe('capacity');
    expect(classifyEc2Error(unsupported('The requested configuration is currently not supported.'))).toBe('fatal');
  });

  it('treats network failures and request timeouts as transient', () => {
    expect(classifyEc2Error(Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }))).toBe('transient');
    expect(classifyEc2Error(Object.assign(new Error('aborted'), { name: 'AbortError' }))).toBe('transient');
    expect(classifyEc2Error(new TypeError('bug'))).toBe('fatal');
  });
});

describe('user data', () => {
  const publicKey = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyFakeKeyFakeKeyFakeKeyFakeKeyFakeKey mayfly';

  it('is a shell script that authorizes the job key for the user and schedules the implosion', () => {
    const text = buildUserData({ publicKey, user: 'travis', implodeAfterMinutes: 65, extra: '' });
    expect(text.startsWith('#!/usr/bin/env bash\n')).toBe(true);
    expect(text).toContain(`cat >> ~travis/.ssh/authorized_keys <<'MAYFLY_KEY'\n${publicKey}\nMAYFLY_KEY\n`);
    expect(text).toContain('shutdown -P +65');
    expect(buildUserData({ publicKey, user: 'travis', extra: '' })).not.toContain('shutdown');
  });

  it('appends operator shell text, and sends #cloud-config as a second MIME part', () => {
    expect(buildUserData({ publicKey, user: 'ubuntu', extra: 'echo hi' })).toMatch(/MAYFLY_KEY\n[\s\S]*\necho hi\n$/);
    const mixed = buildUserData({ publicKey, user: 'ubuntu', extra: '#cloud-config\npackages: [jq]\n' });
    expect(mixed).toMatch(/^Content-Type: multipart\/mixed; boundary="([^"]+)"\nMIME-Version: 1.0\n/);
    expect(mixed).toContain('Content-Type: text/x-shellscript');
    expect(mixed).toContain('Content-Type: text/cloud-config; charset="utf-8"\nContent-Disposition: attachment; filename="operator.cfg"\n\n#cloud-config\npackages: [jq]\n');
    expect(mixed.trimEnd().endsWith('--')).toBe(true);
  });

  it('refuses a MIME archive as USER_DATA and user data over 16 KiB', () => {
    expect(() => buildUserData({ publicKey, user: 'travis', extra: 'Content-Type: multipart/mixed\n' })).toThrow(/MIME multi-part/);
    expect(() => buildUserData({ publicKey, user: 'travis', extra: 'x'.repeat(17_000) })).toThrow(/16384 bytes/);
  });

  it('decodes USER_DATA in URL-safe (travis) or standard base64', () => {
    const text = 'echo ">>?"\n';
    expect(decodeUserData(Buffer.from(text).toString('base64url'))).toBe(text);
    expect(decodeUserData(Buffer.from(text).toString('base64'))).toBe(text);
    expect(() => decodeUserData('not base64!')).toThrow(/not base64/);
  });
});

describe('settings', () => {
  it('parses CUSTOM_TAGS and quotes a bad entry', () => {
    expect(parseCustomTags(' a=1, b = two=2 ,')).toEqual([
      { Key: 'a', Value: '1' },
      { Key: 'b', Value: 'two=2' },
    ]);
    expect(() => parseCustomTags('novalue')).toThrow(/^"novalue" is not key=value/);
    expect(() => parseCustomTags('aws:x=1')).toThrow(/^"aws:x=1" is not key=value/);
  });

  it('loads TRAVIS_WORKER_EC2_* with travis defaults and collects IMAGE_<NAME>', () => {
    const settings = loadConfig([definition], {
      TRAVIS_WORKER_PROVIDER_NAME: 'ec2',
      TRAVIS_WORKER_EC2_SECURITY_GROUP_IDS: 'sg-1,sg-2',
      TRAVIS_WORKER_EC2_IMAGE_DEFAULT: 'ami-0123456789abcdef0',
      TRAVIS_WORKER_EC2_IMAGE_NODE_JS: 'travis-node-*',
      TRAVIS_WORKER_EC2_SPOT: 'true',
    }).backendSettings;
    expect(settings).toMatchObject({
      region: 'eu-west-1',
      instanceType: 't2.micro',
      instanceTypeArm64: 't4g.micro',
      diskSize: 100,
      uploadRetries: 120,
      uploadRetrySleep: 1000,
      sshDialTimeout: 5000,
      publicIp: true,
      publicIpConnect: true,
      securityGroupIds: ['sg-1', 'sg-2'],
      imageOwners: ['self'],
      spot: true,
      images: { node_js: 'travis-node-*' },
    });
  });

  it('refuses half the static credentials and a bad user while loading', () => {
    expect(() => loadConfig([definition], { TRAVIS_WORKER_PROVIDER_NAME: 'ec2', TRAVIS_WORKER_EC2_AWS_ACCESS_KEY_ID: 'AKIA' })).toThrow(/go together/);
    expect(() => loadConfig([definition], { TRAVIS_WORKER_PROVIDER_NAME: 'ec2', TRAVIS_WORKER_EC2_SSH_USER: 'x; rm -rf /' })).toThrow(/SSH_USER/);
  });
});

describe('image and instance type selection', () => {
  it('falls back to IMAGE_DEFAULT, follows one alias, and fails clearly when nothing is set', () => {
    const attributes = testAttributes({ language: 'ruby' });
    expect(imageSetting(attributes, { ruby: 'stable', stable: 'ami-1' }, '')).toBe('ami-1');
    expect(imageSetting(attributes, {}, 'base-*')).toBe('base-*');
    expect(() => imageSetting(attributes, {}, '')).toThrow(InstanceStartError);
  });

  it('maps vm_size per arch, else uses INSTANCE_TYPE', () => {
    expect(mappedInstanceType({ vmSize: 'x-large', arch: 'amd64' })).toBe('m6i.2xlarge');
    expect(mappedInstanceType({ vmSize: 'medium', arch: 'arm64' })).toBe('m6g.large');
    expect(mappedInstanceType({ arch: 'amd64' })).toBeUndefined();
    expect(mappedInstanceType({ vmSize: 'gpu-medium', arch: 'amd64' })).toBeUndefined();
  });
});
