/**
 * travis' warmer service (backends/gce/warmer.ts) through the gce backend:
 * a job that asks for the warmer gets its VM when it has one, and boots its
 * own (saying why in the log) when it answers too late, with an error, or
 * with something that does not read. The fake warmer plants its VMs in the
 * fake GCE, each with a real sshd that lets in only the key handed over.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { definition as gce } from '../../backends/gce/index.js';
import type { GceSettings } from '../../backends/gce/settings.js';
import type { Backend, Instance } from '../../src/backend/contract.js';
import { FakeGce } from '../fakes/gce-server.js';
import { gceSettings, travisImages } from '../fakes/gce-settings.js';
import { FakeWarmer } from '../fakes/warmer-server.js';
import { testAttributes } from '../helpers/attributes.js';
import { testBackendContext } from '../helpers/backend-context.js';
import { CollectingWritable } from '../helpers/collect.js';
import { captureLog, type CapturedLog } from '../helpers/log-capture.js';

const PASSPHRASE = 'warmer-passphrase';
const never = new AbortController().signal;
let fake: FakeGce;
let warmer: FakeWarmer;
let backend: Backend | undefined;
const instances: Instance[] = [];

beforeEach(async () => {
  fake = await FakeGce.start({ images: travisImages() });
  warmer = await FakeWarmer.start(fake, PASSPHRASE);
});

afterEach(async () => {
  await Promise.all(instances.splice(0).map((instance) => instance.destroy()));
  await backend?.close();
  backend = undefined;
  await warmer.close();
  expect(fake.liveInstances().map((record) => record.name)).toEqual([]);
  await fake.close();
});

function withWarmer(overrides: Partial<GceSettings> = {}): Backend {
  backend = gce.create(gceSettings(fake, { warmerUrl: warmer.url, warmerSshPassphrase: PASSPHRASE, travisSite: 'org', ...overrides }), testBackendContext());
  return backend;
}

async function start(on: Backend, log: CapturedLog, warmerWanted = true): Promise<Instance> {
  const instance = await on.start(testAttributes({ warmer: warmerWanted }), {
    signal: AbortSignal.timeout(20_000),
    progress: () => {},
    logger: log.logger,
    recordPhase: () => {},
  });
  instances.push(instance);
  return instance;
}

async function runs(instance: Instance): Promise<string> {
  await instance.upload(Buffer.from('echo hello from $(hostname -I 2>/dev/null || echo vm)'), { signal: never });
  const output = new CollectingWritable();
  expect((await instance.run({ output, signal: never })).exitCode).toBe(0);
  return output.text;
}

const fellBack = (log: CapturedLog): unknown[] =>
  log.lines.filter((line) => line.msg === 'could not obtain an instance from the warmer; booting one').map((line) => line['err']);

describe('gce backend with a warmer', () => {
  it("takes the warmer's VM, asking as travis does, and reaches it with the key it decrypts; deletes it after the job", async () => {
    const log = captureLog();
    const instance = await start(withWarmer(), log);
    expect(warmer.handedOver).toEqual([instance.id]);
    expect(fake.count('instances.insert')).toBe(0);
    const [request] = warmer.requests;
    expect(request?.authorization).toBe(`Basic ${Buffer.from('warmer-user:warmer-secret').toString('base64')}`);
    expect(request?.body).toEqual({
      site: 'org',
      zone: 'us-central1-a',
      image_name: expect.stringMatching(/\/global\/images\/travis-ci-sugilite-trusty-1512508225-986baf0$/),
      machine_type: 'zones/us-central1-a/machineTypes/n1-standard-2',
      public_ip: true,
    });
    expect(await runs(instance)).toContain('hello from');
    await instance.destroy();
    expect(fake.record.find((record) => record.name === instance.id)?.deleted).toBe(true);
    // The key and passphrase are nowhere in the log.
    expect(JSON.stringify(log.lines)).not.toMatch(/PRIVATE KEY|warmer-passphrase|warmer-secret/);
  });

  it('does not ask the warmer for a job that did not ask for it', async () => {
    const instance = await start(withWarmer(), captureLog(), false);
    expect(warmer.requests).toHaveLength(0);
    expect(fake.count('instances.insert')).toBe(1);
    expect(await runs(instance)).toContain('hello from');
  });

  it('boots its own VM when the warmer does not answer within WARMER_TIMEOUT', async () => {
    warmer.behaviour = 'hold';
    const log = captureLog();
    const instance = await start(withWarmer({ warmerTimeout: 200 }), log);
    expect(warmer.requests).toHaveLength(1);
    expect(fake.count('instances.insert')).toBe(1);
    expect(fellBack(log)).toEqual(['the warmer did not answer within 200 ms']);
    expect(await runs(instance)).toContain('hello from');
  });

  it.each([
    ['error', /^the warmer answered HTTP 503, not 200$/],
    ['garbage', /^the warmer's answer is not what it sends: name: "" is not a GCE resource name; zone: missing; ip: "not an address" is not an IP address$/],
  ] as const)('boots its own VM when the warmer answers %s, saying why', async (behaviour, why) => {
    warmer.behaviour = behaviour;
    const log = captureLog();
    const instance = await start(withWarmer(), log);
    expect(fake.count('instances.insert')).toBe(1);
    expect(fellBack(log)).toEqual([expect.stringMatching(why)]);
    expect(await runs(instance)).toContain('hello from');
  });

  it('boots its own VM and deletes the one handed over when its key does not decrypt with WARMER_SSH_PASSPHRASE', async () => {
    warmer.behaviour = 'wrong-key';
    const log = captureLog();
    const deleted = new Promise<string>((resolve) => fake.events.on('deleted', (record: { name: string }) => resolve(record.name)));
    const instance = await start(withWarmer(), log);
    expect(fake.count('instances.insert')).toBe(1);
    expect(fellBack(log)).toEqual([expect.stringMatching(/^the SSH key of warmed-\S+ from the warmer could not be decrypted with WARMER_SSH_PASSPHRASE: /)]);
    expect(await deleted).toBe(warmer.handedOver[0]);
    expect(await runs(instance)).toContain('hello from');
  });
});
