/**
 * Each backend's `validate` hook, through the loader: every bad variable of
 * the backend is named in the one error loading throws, next to bad core
 * variables, before anything is created or connected.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { backends } from '../../backends/index.js';
import { configErrorOf } from '../helpers/config-error.js';

const missing = mkdtempSync(join(tmpdir(), 'mayfly-validation-'));
afterAll(() => rmSync(missing, { recursive: true, force: true }));
const nowhere = join(missing, 'absent');

/** The variables an error reports a problem of (one per line, sorted). */
function named(message: string): string[] {
  return [...message.matchAll(/(?:^ {2}|configuration: )(TRAVIS_WORKER_[A-Z0-9_]+):/gm)].map((match) => match[1] as string);
}

describe('backend settings are validated while loading, every problem at once', () => {
  it('ec2: user data, custom tags, ssh user, half the credentials, price and endpoint', () => {
    const message = configErrorOf(
      {
        TRAVIS_WORKER_PROVIDER_NAME: 'ec2',
        TRAVIS_WORKER_EC2_USER_DATA: 'not base64!',
        TRAVIS_WORKER_EC2_CUSTOM_TAGS: 'novalue',
        TRAVIS_WORKER_EC2_SSH_USER: 'x; rm -rf /',
        TRAVIS_WORKER_EC2_AWS_ACCESS_KEY_ID: 'AKIAEXAMPLE',
        TRAVIS_WORKER_EC2_SPOT_MAX_PRICE: 'cheap',
        TRAVIS_WORKER_EC2_ENDPOINT: 'not a url',
        TRAVIS_WORKER_HARD_TIMEOUT: 'long',
      },
      backends,
    );
    expect(named(message)).toEqual([
      'TRAVIS_WORKER_EC2_AWS_SECRET_ACCESS_KEY',
      'TRAVIS_WORKER_EC2_CUSTOM_TAGS',
      'TRAVIS_WORKER_EC2_ENDPOINT',
      'TRAVIS_WORKER_EC2_SPOT_MAX_PRICE',
      'TRAVIS_WORKER_EC2_SSH_USER',
      'TRAVIS_WORKER_EC2_USER_DATA',
      'TRAVIS_WORKER_HARD_TIMEOUT',
    ]);
    expect(message).toContain('TRAVIS_WORKER_EC2_USER_DATA: is not base64');
    expect(message).toContain('TRAVIS_WORKER_EC2_CUSTOM_TAGS: "novalue" is not key=value');
    expect(message).toMatch(/TRAVIS_WORKER_EC2_AWS_SECRET_ACCESS_KEY: is not set, but TRAVIS_WORKER_EC2_AWS_ACCESS_KEY_ID is/);
  });

  it('ec2: user data that cannot be combined with the key script, or too large with it', () => {
    const mime = Buffer.from('Content-Type: multipart/mixed\n').toString('base64url');
    expect(configErrorOf({ TRAVIS_WORKER_PROVIDER_NAME: 'ec2', TRAVIS_WORKER_EC2_USER_DATA: mime }, backends)).toContain(
      'TRAVIS_WORKER_EC2_USER_DATA: a MIME multi-part archive cannot be combined',
    );
    const large = Buffer.from('x'.repeat(17_000)).toString('base64');
    expect(configErrorOf({ TRAVIS_WORKER_PROVIDER_NAME: 'ec2', TRAVIS_WORKER_EC2_USER_DATA: large }, backends)).toMatch(
      /TRAVIS_WORKER_EC2_USER_DATA: would exceed EC2's 16384 bytes/,
    );
  });

  it('ssh: bad and duplicate hosts, no credentials, an unreadable key file', () => {
    const hosts = configErrorOf({ TRAVIS_WORKER_PROVIDER_NAME: 'ssh', TRAVIS_WORKER_SSH_HOSTS: 'a:b:c' }, backends);
    expect(named(hosts)).toEqual(['TRAVIS_WORKER_SSH_HOSTS', 'TRAVIS_WORKER_SSH_KEY_PATH']);
    expect(hosts).toContain('TRAVIS_WORKER_SSH_HOSTS: "a:b:c" is not host or host:port');
    expect(hosts).toContain('TRAVIS_WORKER_SSH_KEY_PATH: is not set, nor TRAVIS_WORKER_SSH_KEY or TRAVIS_WORKER_SSH_PASSWORD');

    const file = configErrorOf(
      { TRAVIS_WORKER_PROVIDER_NAME: 'ssh', TRAVIS_WORKER_SSH_HOSTS: 'a,a:22', TRAVIS_WORKER_SSH_KEY_PATH: nowhere },
      backends,
    );
    expect(named(file)).toEqual(['TRAVIS_WORKER_SSH_HOSTS', 'TRAVIS_WORKER_SSH_KEY_PATH']);
    expect(file).toContain('TRAVIS_WORKER_SSH_HOSTS: a:22 is listed twice');
    expect(file).toContain(`TRAVIS_WORKER_SSH_KEY_PATH: cannot read ${nowhere}`);
  });

  it('docker: endpoint, sizes, empty commands, too many cores, unreadable certificates', () => {
    const message = configErrorOf(
      {
        TRAVIS_WORKER_PROVIDER_NAME: 'docker',
        TRAVIS_WORKER_DOCKER_MEMORY: 'much',
        TRAVIS_WORKER_DOCKER_SHM: 'some',
        TRAVIS_WORKER_DOCKER_CMD: ' ',
        TRAVIS_WORKER_DOCKER_EXEC_CMD: ' ',
        TRAVIS_WORKER_DOCKER_CPUS: '3',
        TRAVIS_WORKER_DOCKER_CPU_SET_SIZE: '2',
        TRAVIS_WORKER_DOCKER_ENDPOINT: 'tcp://127.0.0.1:2376',
        TRAVIS_WORKER_DOCKER_CERT_PATH: nowhere,
      },
      backends,
    );
    expect(named(message)).toEqual([
      'TRAVIS_WORKER_DOCKER_CERT_PATH',
      'TRAVIS_WORKER_DOCKER_CMD',
      'TRAVIS_WORKER_DOCKER_CPUS',
      'TRAVIS_WORKER_DOCKER_EXEC_CMD',
      'TRAVIS_WORKER_DOCKER_MEMORY',
      'TRAVIS_WORKER_DOCKER_SHM',
    ]);
    expect(message).toContain(`TRAVIS_WORKER_DOCKER_CERT_PATH: cannot read ${join(nowhere, 'ca.pem')}`);
    expect(message).toContain('TRAVIS_WORKER_DOCKER_CPUS: 3 is more than the 2 cores there are');

    const endpoints = configErrorOf({ TRAVIS_WORKER_PROVIDER_NAME: 'docker', TRAVIS_WORKER_DOCKER_HOST: 'unix://', TRAVIS_WORKER_DOCKER_MEMORY: '4 parsecs' }, backends);
    expect(named(endpoints)).toEqual(['TRAVIS_WORKER_DOCKER_HOST', 'TRAVIS_WORKER_DOCKER_MEMORY']);
  });

  it('qemu: sizes, cores, paths, files that are not there, the bridge mode\'s bridge and addresses', () => {
    const message = configErrorOf(
      {
        TRAVIS_WORKER_PROVIDER_NAME: 'qemu',
        TRAVIS_WORKER_QEMU_BINARY: nowhere,
        TRAVIS_WORKER_QEMU_MEMORY: 'lots',
        TRAVIS_WORKER_QEMU_DISK_SIZE: '20 parsecs',
        TRAVIS_WORKER_QEMU_CPUS: '3',
        TRAVIS_WORKER_QEMU_CPU_SET_SIZE: '2',
        TRAVIS_WORKER_QEMU_WORK_DIR: 'relative/dir',
        TRAVIS_WORKER_QEMU_INITRD: nowhere,
        TRAVIS_WORKER_QEMU_SSH_USER: 'Robert; rm',
        TRAVIS_WORKER_QEMU_IMAGE_DEFAULT: join(nowhere, 'golden.qcow2'),
        TRAVIS_WORKER_QEMU_NETWORK: 'bridge',
        TRAVIS_WORKER_QEMU_BRIDGE_ADDRESSES: '192.168.50.10 10.0.0.300/24',
      },
      backends,
    );
    expect([...new Set(named(message))]).toEqual([
      'TRAVIS_WORKER_QEMU_BINARY',
      'TRAVIS_WORKER_QEMU_BRIDGE',
      'TRAVIS_WORKER_QEMU_BRIDGE_ADDRESSES',
      'TRAVIS_WORKER_QEMU_CPUS',
      'TRAVIS_WORKER_QEMU_DISK_SIZE',
      'TRAVIS_WORKER_QEMU_IMAGE_DEFAULT',
      'TRAVIS_WORKER_QEMU_INITRD',
      'TRAVIS_WORKER_QEMU_MEMORY',
      'TRAVIS_WORKER_QEMU_SSH_USER',
      'TRAVIS_WORKER_QEMU_WORK_DIR',
    ]);
    expect(message).toContain('TRAVIS_WORKER_QEMU_BRIDGE_ADDRESSES: "192.168.50.10" is not an IPv4 address with a prefix length');
    expect(message).toContain('TRAVIS_WORKER_QEMU_CPUS: 3 is more than the 2 cores there are');
    expect(message).toContain(`TRAVIS_WORKER_QEMU_BINARY: "${nowhere}" is not a program this worker can run`);
    expect(message).toContain(`TRAVIS_WORKER_QEMU_IMAGE_DEFAULT: the image ${join(nowhere, 'golden.qcow2')} does not exist or cannot be read`);
    expect(message).toContain(`TRAVIS_WORKER_QEMU_INITRD: the initramfs ${nowhere} does not exist or cannot be read`);
    const initrdAlone = configErrorOf({ TRAVIS_WORKER_PROVIDER_NAME: 'qemu', TRAVIS_WORKER_QEMU_INITRD: missing }, backends);
    expect(named(initrdAlone)).toEqual(['TRAVIS_WORKER_QEMU_INITRD']);
    expect(initrdAlone).toContain('is set without TRAVIS_WORKER_QEMU_KERNEL: an initramfs is only used for direct-kernel boot');
  });

  it('gce: account key, API endpoint and an alias without its image, never quoting the key', () => {
    const key = JSON.stringify({ client_email: 'ci@example.iam.gserviceaccount.com', private_key: 'S3CR3TKEY' });
    const message = configErrorOf(
      {
        TRAVIS_WORKER_PROVIDER_NAME: 'gce',
        TRAVIS_WORKER_GCE_ACCOUNT_JSON: `${key.slice(0, -1)},"S3CR3TKEY"`,
        TRAVIS_WORKER_GCE_API_ENDPOINT: 'ftp://compute.example',
        TRAVIS_WORKER_GCE_IMAGE_ALIASES: 'pinned',
      },
      backends,
    );
    expect(named(message)).toEqual(['TRAVIS_WORKER_GCE_ACCOUNT_JSON', 'TRAVIS_WORKER_GCE_API_ENDPOINT', 'TRAVIS_WORKER_GCE_IMAGE_ALIASES']);
    expect(message).toContain('TRAVIS_WORKER_GCE_ACCOUNT_JSON: is not valid JSON');
    expect(message).toContain('TRAVIS_WORKER_GCE_IMAGE_ALIASES: names pinned, but TRAVIS_WORKER_GCE_IMAGE_PINNED is not set');
    expect(message).not.toMatch(/S3CR3T|client_email/);
  });

  it('local: a containment it does not know and a misspelt setting (strict)', () => {
    const message = configErrorOf(
      { TRAVIS_WORKER_STRICT_CONFIG: 'true', TRAVIS_WORKER_PROVIDER_NAME: 'local', TRAVIS_WORKER_LOCAL_CONTAINMENT: 'jail', TRAVIS_WORKER_LOCAL_SCRIPT_DIR: '/tmp' },
      backends,
    );
    expect(named(message)).toEqual(['TRAVIS_WORKER_LOCAL_CONTAINMENT', 'TRAVIS_WORKER_LOCAL_SCRIPT_DIR']);
  });

  it('fake: an exit code and a duration that are not', () => {
    const message = configErrorOf({ TRAVIS_WORKER_PROVIDER_NAME: 'fake', TRAVIS_WORKER_FAKE_EXIT_CODE: 'one', TRAVIS_WORKER_FAKE_RUN_SLEEP: '5' }, backends);
    expect(named(message)).toEqual(['TRAVIS_WORKER_FAKE_EXIT_CODE', 'TRAVIS_WORKER_FAKE_RUN_SLEEP']);
  });
});
