/**
 * The role files operators apply (deploy/gce/mayfly-role.yaml,
 * deploy/aws/mayfly-policy.json) hold exactly what each backend needs: its
 * whole life (start, run a script, destroy, the reaper's list and delete)
 * works against a fake cloud granting only the listed permissions, and
 * fails, naming the permission, without any one of them.
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { definition as ec2 } from '../../backends/ec2/index.js';
import { definition as gce } from '../../backends/gce/index.js';
import type { Backend } from '../../src/backend/contract.js';
import { errorMessage } from '../../src/errors.js';
import { silentLogger } from '../../src/logger.js';
import { FakeEc2 } from '../fakes/ec2-server.js';
import { ec2Settings, registerDefaultImage } from '../fakes/ec2-settings.js';
import { FakeGce } from '../fakes/gce-server.js';
import { gceSettings, travisImages } from '../fakes/gce-settings.js';
import { testAttributes } from '../helpers/attributes.js';
import { testBackendContext } from '../helpers/backend-context.js';
import { CollectingWritable } from '../helpers/collect.js';

const ROLE_FILE = new URL('../../deploy/gce/mayfly-role.yaml', import.meta.url);
const POLICY_FILE = new URL('../../deploy/aws/mayfly-policy.json', import.meta.url);

/** The GCE role's `includedPermissions`. */
function gcePermissions(): string[] {
  const role = parse(readFileSync(ROLE_FILE, 'utf8')) as { includedPermissions?: unknown };
  if (!Array.isArray(role.includedPermissions)) throw new Error(`${ROLE_FILE.pathname} has no includedPermissions list`);
  return role.includedPermissions.map(String);
}

/** Every action the AWS policy allows. */
function ec2Permissions(): string[] {
  const policy = JSON.parse(readFileSync(POLICY_FILE, 'utf8')) as { Statement: { Effect: string; Action: string | string[] }[] };
  return policy.Statement.filter((statement) => statement.Effect === 'Allow').flatMap((statement) => statement.Action);
}

const withoutOne = (all: string[], removed: string): Set<string> => new Set(all.filter((permission) => permission !== removed));

/**
 * What a worker does with the cloud: start a job's VM, run a script on it,
 * destroy it, then list and delete what the reaper finds. Throws with what
 * the cloud refused.
 */
async function lifecycle(backend: Backend): Promise<void> {
  const signal = AbortSignal.timeout(60_000);
  const instance = await backend.start(testAttributes(), { signal, logger: silentLogger, progress: () => {}, recordPhase: () => {} });
  try {
    await instance.upload(Buffer.from('echo hello from the job'), { signal });
    const output = new CollectingWritable();
    expect((await instance.run({ output, signal })).exitCode).toBe(0);
  } finally {
    await instance.destroy();
  }
  await reapAll(backend, signal);
}

/** What the reaper does, without its judgement: list every managed instance and delete it. */
async function reapAll(backend: Backend, signal: AbortSignal): Promise<void> {
  const { listManaged, destroyManaged } = backend;
  if (!listManaged || !destroyManaged) throw new Error('the backend cannot list its instances');
  for (const leaked of await listManaged.call(backend, signal)) await destroyManaged.call(backend, leaked.id, signal);
}

/** The error `lifecycle` ends with, or undefined. */
async function failureOf(backend: Backend): Promise<string | undefined> {
  return lifecycle(backend).then(
    () => undefined,
    (err: unknown) => errorMessage(err) + (err instanceof Error && err.cause !== undefined ? ` (${errorMessage(err.cause)})` : ''),
  );
}

/** A fake cloud as these tests drive it. */
interface FakeCloud {
  /** Grant exactly `permissions` (undefined: all). */
  grant(permissions: Set<string> | undefined): void;
  /** An instance of mayfly's left behind by a worker that is gone, for the reaper. */
  plantLeak(): void;
  backend(): Backend;
  /** Names of the instances still there once the deletes asked for have run their course. */
  live(): Promise<string[]>;
}

/** `lifecycle`'s failure with only `permissions` granted; afterwards nothing is left, whatever was refused. */
async function failureWith(cloud: FakeCloud, permissions: Set<string>): Promise<string | undefined> {
  cloud.plantLeak();
  cloud.grant(permissions);
  const backend = cloud.backend();
  try {
    return await failureOf(backend);
  } finally {
    cloud.grant(undefined);
    await reapAll(backend, AbortSignal.timeout(60_000));
    await backend.close();
    expect(await cloud.live()).toEqual([]);
  }
}

describe('GCE role (deploy/gce/mayfly-role.yaml)', () => {
  let fake: FakeGce;
  beforeAll(async () => {
    fake = await FakeGce.start({ images: travisImages() });
  });
  afterAll(async () => {
    await fake?.close();
  });
  const cloud: FakeCloud = {
    grant: (permissions) => (fake.permissions = permissions),
    plantLeak: () => fake.plant({ name: 'travis-job-leaked', zone: 'us-central1-a', labels: { 'travis-job-id': '1', 'travis-worker': 'gone', 'travis-lease-expiry': '1' } }),
    backend: () => gce.create(gceSettings(fake), testBackendContext()),
    live: async () => {
      await fake.deletesFinished();
      return fake.liveInstances().map((record) => record.name);
    },
  };

  it('is enough for the whole life of a job VM and the reaper', async () => {
    expect(await failureWith(cloud, new Set(gcePermissions()))).toBeUndefined();
  });

  it.each(gcePermissions())('is needed in full: without %s the backend fails and says which', async (permission) => {
    expect(await failureWith(cloud, withoutOne(gcePermissions(), permission))).toContain(permission);
  });
});

describe('AWS policy (deploy/aws/mayfly-policy.json)', () => {
  let fake: FakeEc2;
  beforeAll(async () => {
    fake = await FakeEc2.start({ bootDelayMs: 20 });
    registerDefaultImage(fake);
  });
  afterAll(async () => {
    await fake?.close();
  });
  const cloud: FakeCloud = {
    grant: (permissions) => (fake.permissions = permissions),
    plantLeak: () => fake.plant({ tags: { Name: 'travis-job-1', 'travis.job_id': '1', 'travis.worker': 'gone', 'travis.lease_expires': '2000-01-01T00:00:00.000Z' } }),
    backend: () => ec2.create(ec2Settings(fake, { TRAVIS_WORKER_EC2_INTERRUPTION_POLL_SLEEP: '0s' }), testBackendContext()),
    live: async () => fake.live().map((instance) => instance.instanceId),
  };

  it('is enough for the whole life of a job instance and the reaper', async () => {
    expect(await failureWith(cloud, new Set(ec2Permissions()))).toBeUndefined();
  });

  it.each(ec2Permissions())('is needed in full: without %s the backend fails and says which', async (permission) => {
    expect(await failureWith(cloud, withoutOne(ec2Permissions(), permission))).toContain(permission);
  });
});
