/**
 * The qemu backend with real VMs (TCG): a job through the worker on the real
 * broker, a job on a VM the warm pool booted ahead, a QEMU killed under a
 * running job, the startup timeout, a cancel during boot, MAX_VMS, a QEMU
 * that dies while booting, and the reaper
 * after a worker is killed with SIGKILL. After each test nothing of its VMs
 * is left: no VM directory (overlay, seed, pidfile) and no QEMU process.
 *
 * VMs that must not finish booting boot a blank disk with the image's own
 * (here: no) boot loader: the firmware finds nothing to boot and waits, so
 * the boot is surely still under way when the test acts, whatever the
 * machine's speed, and costs no kernel boot.
 */
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { runTool } from '../../backends/qemu/tools.js';
import { QemuBackend } from '../../backends/qemu/backend.js';
import type { StartOptions } from '../../src/backend/contract.js';
import { InstanceStartError, NoCapacityError } from '../../src/errors.js';
import { silentLogger } from '../../src/logger.js';
import { WARM_JOB_ID } from '../../src/warm-pool/pool.js';
import { useAmqpWorker } from '../helpers/amqp-worker.js';
import { testAttributes } from '../helpers/attributes.js';
import { testBackendContext } from '../helpers/backend-context.js';
import { startBuildApi, type FakeBuildApi } from '../helpers/build-api.js';
import { faultPayload } from '../helpers/fault-jobs.js';
import { KILLED_JOB_ID, killWorkerMidJob, killWorkerProcess, type WorkerProcess } from '../helpers/killed-worker.js';
import { describeWithQemu } from '../helpers/qemu-describe.js';
import { leftIn, qemuPidIn, testQemuEnv, testQemuSettings, testWorkDir, VM_TEST_TIMEOUT_MS } from '../helpers/qemu.js';
import { drain, messageCount, publishRaw, type DrainedMessage } from '../helpers/rabbitmq.js';
import { startTestWorker, type TestWorker } from '../helpers/worker.js';

vi.setConfig({ testTimeout: VM_TEST_TIMEOUT_MS, hookTimeout: VM_TEST_TIMEOUT_MS });

const QUEUE = 'builds.qemu';
let nextJobId = 840_000 + Math.floor(Math.random() * 10_000) * 10;
let workDir: string;
/** Holds `blank.qcow2`: a disk with nothing to boot. */
let blankDir: string;

const timeout = (): AbortSignal => AbortSignal.timeout(VM_TEST_TIMEOUT_MS);
const nothingLeft = { entries: [], processes: [] };

describeWithQemu('qemu backend (real VMs)', () => {
  beforeAll(async () => {
    workDir = await testWorkDir();
    blankDir = await mkdtemp(join(tmpdir(), 'mayfly-qemu-blank-'));
    await runTool('qemu-img', ['create', '-q', '-f', 'qcow2', join(blankDir, 'blank.qcow2'), '64M'], timeout());
  });
  afterAll(async () => {
    await rm(workDir, { recursive: true, force: true });
    await rm(blankDir, { recursive: true, force: true });
  });
  // Registered before the worker fixture's: runs once the worker has stopped.
  afterEach(async () => {
    expect(await leftIn(workDir)).toEqual(nothingLeft);
  });

  describe('through the worker (real broker)', () => {
    let buildApi: FakeBuildApi;
    beforeAll(async () => {
      buildApi = await startBuildApi();
    });
    afterAll(() => buildApi?.close());
    const amqp = useAmqpWorker(QUEUE);

    function job(script: string): number {
      nextJobId += 1;
      buildApi.scripts.set(nextJobId, script);
      return nextJobId;
    }

    const publish = (body: string): Promise<void> => publishRaw(amqp.vhost.uri, '', QUEUE, body);
    const logTextOf = (messages: DrainedMessage[]): string => messages.map((m) => (m.body as { log: string }).log).join('');
    const statesOf = async (jobId: number): Promise<string[]> =>
      (await drain(amqp.vhost.uri, 'reporting.jobs.builds', await messageCount(amqp.vhost.uri, 'reporting.jobs.builds'), timeout()))
        .map((m) => m.body as { id: number; state: string })
        .filter((body) => body.id === jobId)
        .map((body) => body.state);

    /** Consume log parts until their text contains `text`. */
    async function logUntil(text: string): Promise<string> {
      const parts: DrainedMessage[] = [];
      const signal = timeout();
      while (!logTextOf(parts).includes(text)) parts.push(...(await drain(amqp.vhost.uri, 'reporting.jobs.logs', 1, signal)));
      return logTextOf(parts);
    }

    it('runs a job in a VM the seed named and keyed; then notices a QEMU killed under a running job and requeues it', async () => {
      const w = await amqp.start({ TRAVIS_WORKER_BUILD_API_URI: buildApi.uri, ...testQemuEnv(workDir) });
      const passing = job('echo "hello from $(hostname) as $(id -un)"');
      const passed = w.jobDone(passing);
      await publish(faultPayload(QUEUE, passing));
      const text = await logUntil('hello from');
      expect((await passed).result).toEqual({ outcome: 'finished', state: 'passed' });
      expect(text).toMatch(new RegExp(`hello from mayfly-job-${passing}-[0-9a-f]{8} as travis`));
      expect(await statesOf(passing)).toEqual(['received', 'started', 'passed']);
      expect(await leftIn(workDir)).toEqual(nothingLeft);

      const killed = job('echo running; sleep 600; echo not reached');
      const requeued = w.jobDone(killed);
      await publish(faultPayload(QUEUE, killed));
      await logUntil('running');
      process.kill(await qemuPidIn(workDir), 'SIGKILL');
      expect((await requeued).result).toEqual({ outcome: 'requeued', cause: 'E_CONNECTION_LOST', instanceReady: true });
      expect(await statesOf(killed)).toEqual(['received', 'started', 'reset']);
    });

    it('boots a VM ahead with the warm pool; a job takes it (a hit) and passes; stopping leaves nothing, the refill boot included', async () => {
      const w = await amqp.start({
        TRAVIS_WORKER_BUILD_API_URI: buildApi.uri,
        TRAVIS_WORKER_PROGRESS_TYPE: 'text',
        TRAVIS_WORKER_WARM_POOL_SIZE: '1',
        TRAVIS_WORKER_WARM_POOL_MODE: 'fixed',
        ...testQemuEnv(workDir),
      });
      const pool = w.worker.warmPool;
      if (pool === undefined) throw new Error('no warm pool');
      const idle = (): string[] => pool.status().shapes.flatMap((shape) => shape.idle.map((vm) => vm.id));
      while (idle().length === 0) await once(pool.events, 'ready', { signal: timeout() });
      const [warm] = idle();
      expect(warm).toMatch(new RegExp(`^mayfly-job-${WARM_JOB_ID}-[0-9a-f]{8}$`));
      expect(pool.status().shapes).toEqual([expect.objectContaining({ shape: expect.stringMatching(/^image=golden\.qcow2 inode=\d+ mtime=\d+$/) })]);

      const jobId = job('echo "warm job on $(hostname)"');
      const done = w.jobDone(jobId);
      await publish(faultPayload(QUEUE, jobId));
      const text = await logUntil('warm job on');
      expect((await done).result).toEqual({ outcome: 'finished', state: 'passed' });
      expect(text).toContain(`Using warm instance ${warm}`);
      expect(text).toContain(`warm job on ${warm}`);
      expect(w.worker.status().warmPool).toMatchObject({ hits: 1, misses: 0 });

      // The refill may be idle or still booting: stopping ends it either way.
      w.worker.drain('test');
      await w.worker.stopped;
      expect(await leftIn(workDir)).toEqual(nothingLeft);
    });

    it('requeues a job whose VM is not up within the startup timeout', async () => {
      const w = await amqp.start({
        TRAVIS_WORKER_BUILD_API_URI: buildApi.uri,
        TRAVIS_WORKER_STARTUP_TIMEOUT: '2s',
        ...testQemuEnv(workDir, {
          TRAVIS_WORKER_QEMU_IMAGE_DIR: blankDir,
          TRAVIS_WORKER_QEMU_IMAGE_DEFAULT: 'blank.qcow2',
          TRAVIS_WORKER_QEMU_KERNEL: '',
          TRAVIS_WORKER_QEMU_INITRD: '',
        }),
      });
      const jobId = job('echo must not run');
      const done = w.jobDone(jobId);
      await publish(faultPayload(QUEUE, jobId));
      expect((await done).result).toEqual({ outcome: 'requeued', cause: 'E_STARTUP_TIMEOUT', instanceReady: false });
      expect(await statesOf(jobId)).toEqual(['received', 'reset']);
    });
  });

  describe('starting VMs', () => {
    /** Start options whose `running` resolves once QEMU runs (its monitor answered): the boot is under way. */
    function booting(signal: AbortSignal): { options: StartOptions; running: Promise<void> } {
      let ran: () => void = () => {};
      const running = new Promise<void>((resolve) => {
        ran = resolve;
      });
      const options: StartOptions = {
        signal,
        progress: () => {},
        logger: silentLogger,
        recordPhase: (phase) => {
          if (phase === 'running') ran();
        },
      };
      return { options, running };
    }

    const blankBackend = (overrides: Parameters<typeof testQemuSettings>[1] = {}): QemuBackend =>
      new QemuBackend(testQemuSettings(workDir, { imageDir: blankDir, images: { default: 'blank.qcow2' }, kernel: '', initrd: '', ...overrides }), testBackendContext(), false);

    it('refuses a VM beyond MAX_VMS so the job is requeued; a start cancelled during boot leaves nothing and frees its slot', async () => {
      const backend = blankBackend({ maxVms: 1 });
      const cancel = new AbortController();
      const first = booting(cancel.signal);
      const starting = backend.start(testAttributes({ jobId: 1 }), first.options);
      const settled = starting.then(
        () => new Error('the start was not cancelled'),
        (err: unknown) => err,
      );
      await first.running;

      const full = await backend.start(testAttributes({ jobId: 2 }), booting(timeout()).options).catch((err: unknown) => err);
      expect(full).toBeInstanceOf(NoCapacityError);
      expect((full as NoCapacityError).requeue).toBe(true);
      expect((await leftIn(workDir)).entries).toHaveLength(1);

      cancel.abort(new Error('cancelled by the test'));
      expect(await settled).toEqual(new Error('cancelled by the test'));
      expect(await leftIn(workDir)).toEqual(nothingLeft);
      expect(backend.running).toBe(0);
    });

    it('fails a start at once when QEMU dies during the boot, saying how it ended', async () => {
      const backend = blankBackend();
      const { options, running } = booting(timeout());
      const starting = backend.start(testAttributes({ jobId: 3 }), options).catch((err: unknown) => err);
      await running;
      process.kill(await qemuPidIn(workDir), 'SIGKILL');
      const error = await starting;
      expect(error).toBeInstanceOf(InstanceStartError);
      expect((error as InstanceStartError).message).toMatch(/^VM mayfly-job-3-[0-9a-f]{8} stopped while it booted \(QEMU killed by SIGKILL/);
      expect(backend.running).toBe(0);
    });
  });

  describe('a worker killed with SIGKILL mid-job', () => {
    const host = 'qemu-kill9-worker';
    let base: string;
    let killed: WorkerProcess | undefined;
    let successor: TestWorker | undefined;

    beforeEach(async () => {
      base = await mkdtemp(join(tmpdir(), 'mayfly-qemu-kill9-'));
    });
    afterEach(async () => {
      await killWorkerProcess(killed);
      await successor?.stop();
      await rm(base, { recursive: true, force: true });
    });

    it("leaves its VM running, which the next worker of the same name kills and removes in its reaper's first pass", async () => {
      const { env } = await killWorkerMidJob(base, host, testQemuEnv(workDir), (worker) => (killed = worker));
      const left = await leftIn(workDir);
      expect(left.entries).toEqual([expect.stringMatching(new RegExp(`^mayfly-job-${KILLED_JOB_ID}-[0-9a-f]{8}$`))]);
      expect(left.processes).toEqual([await qemuPidIn(workDir)]);

      // The grace period covers a start in flight; this worker has none, and the VM is seconds old.
      successor = await startTestWorker({ ...env, TRAVIS_WORKER_REAPER_GRACE: '0s', TRAVIS_WORKER_REAPER_INTERVAL: '1h' });
      const summary = await successor.worker.reaper?.firstPass;
      expect(summary?.reaped).toEqual([{ id: left.entries[0], reason: 'orphaned' }]);
    });
  });
});
