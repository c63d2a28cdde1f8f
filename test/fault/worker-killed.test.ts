/**
 * Fault: the worker process is killed with SIGKILL while a job's script
 * prints (OOM killer, power loss, `kill -9`), also while it drains after a
 * SIGTERM (a unit whose stop timeout, e.g. systemd's TimeoutStopSec, is
 * shorter than TRAVIS_WORKER_SHUTDOWN_TIMEOUT). The broker gives the
 * unacknowledged delivery back; the next worker of the same name takes it
 * and runs it to the end, and its reaper destroys the VM the killed worker
 * left. Read from the broker: the killed run abandoned, one terminal state,
 * the finishing run's log complete; from the fake EC2: no VM left.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { TAG_JOB_ID } from '../../backends/ec2/tags.js';
import { FakeEc2, type FakeEc2Instance } from '../fakes/ec2-server.js';
import { ec2Env, registerDefaultImage } from '../fakes/ec2-settings.js';
import { useAmqpWorker } from '../helpers/amqp-worker.js';
import { startBuildApi, type FakeBuildApi } from '../helpers/build-api.js';
import { ENDLESS_SCRIPT, FINISHING_LAST_LINE, FINISHING_SCRIPT, faultPayload } from '../helpers/fault-jobs.js';
import { startLedger, type JobLedger } from '../helpers/job-ledger.js';
import { publishRaw } from '../helpers/rabbitmq.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const QUEUE = 'builds.ec2';
const HOST = 'fault-kill9-worker';

describe('fault: worker process killed with SIGKILL mid-script (ec2)', () => {
  const amqp = useAmqpWorker(QUEUE);
  let fake: FakeEc2;
  let buildApi: FakeBuildApi;
  let ledger: JobLedger | undefined;
  let child: ChildProcess | undefined;

  beforeAll(async () => {
    fake = await FakeEc2.start({ bootDelayMs: 20 });
    registerDefaultImage(fake);
    buildApi = await startBuildApi();
  });
  afterEach(async () => {
    if (child && child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await once(child, 'exit');
    }
    await ledger?.close();
  });
  afterAll(async () => {
    buildApi?.close();
    await fake?.close();
  });

  const instancesOf = (jobId: number): FakeEc2Instance[] => fake.instances.filter((instance) => instance.tags[TAG_JOB_ID] === String(jobId));

  /** Resolves once the fake has terminated `instance`. */
  function terminated(instance: FakeEc2Instance): Promise<void> {
    return new Promise((resolve) => {
      const onTerminated = (which: FakeEc2Instance): void => {
        if (which !== instance) return;
        fake.off('terminated', onTerminated);
        resolve();
      };
      fake.on('terminated', onTerminated);
      if (instance.state === 'terminated') onTerminated(instance);
    });
  }

  /**
   * A worker process (bin/mayfly.ts) runs job `jobId`'s endless script; once
   * it prints, `kill` ends the process; a successor worker must run the job
   * to passed and reap the VM left behind. `scenario` names its row in the
   * fault report.
   */
  async function killMidScript(scenario: string, jobId: number, kill: (killed: ChildProcess, output: () => string) => Promise<void>): Promise<void> {
    const signal = AbortSignal.timeout(25_000);
    ledger = await startLedger(amqp.vhost.uri);
    buildApi.scripts.set(jobId, ENDLESS_SCRIPT);
    const env = {
      TRAVIS_WORKER_PROVIDER_NAME: 'ec2',
      ...ec2Env(fake),
      TRAVIS_WORKER_BUILD_API_URI: buildApi.uri,
      TRAVIS_WORKER_HOSTNAME: HOST,
    };
    // The worker as it runs in production (bin/mayfly.ts), from the sources.
    const killed = spawn(process.execPath, ['--import', join(ROOT, 'test/helpers/ts-loader.mjs'), join(ROOT, 'bin/mayfly.ts')], {
      cwd: ROOT,
      env: {
        PATH: process.env.PATH ?? '/usr/bin:/bin',
        ...env,
        TRAVIS_WORKER_QUEUE_TYPE: 'amqp',
        TRAVIS_WORKER_AMQP_URI: amqp.vhost.uri,
        TRAVIS_WORKER_QUEUE_NAME: QUEUE,
        TRAVIS_WORKER_INITIAL_SLEEP: '0s',
        TRAVIS_WORKER_REAPER_INTERVAL: '0',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child = killed;
    // Its log (JSON lines on stdout) says when it consumes: a job published before would find no queue.
    let output = '';
    const consuming = new Promise<void>((resolve) => {
      killed.stdout?.on('data', (chunk: Buffer) => {
        output += chunk.toString();
        if (output.includes('"msg":"worker started"')) resolve();
      });
    });
    killed.stderr?.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    const exitedEarly = once(killed, 'exit').then(() => {
      throw new Error(`the worker exited before the job ran:\n${output}`);
    });
    exitedEarly.catch(() => undefined);
    await Promise.race([consuming, exitedEarly]);
    await publishRaw(amqp.vhost.uri, '', QUEUE, faultPayload(QUEUE, jobId));
    await Promise.race([ledger.untilLogged(jobId, 'line 5\r\n', signal), exitedEarly]);
    const [left, ...others] = instancesOf(jobId);
    expect(others).toEqual([]);
    if (!left) throw new Error('the job runs on no VM');
    // The run after the fault gets a script that ends.
    buildApi.scripts.set(jobId, FINISHING_SCRIPT);
    await kill(killed, () => output);
    await once(killed, 'exit').catch(() => undefined);
    expect(left.state).toBe('running');

    const reaped = terminated(left);
    // No grace: the killed worker's VM is seconds old. Passes every 250 ms: one made while the job starts spares its VM.
    const successor = await amqp.start({ ...env, TRAVIS_WORKER_REAPER_GRACE: '0s', TRAVIS_WORKER_REAPER_INTERVAL: '250ms' });
    await ledger.untilFinished([jobId], signal);
    expect(ledger.states(jobId)).toEqual(['received', 'started', 'received', 'started', 'passed']);
    await ledger.untilLogged(jobId, FINISHING_LAST_LINE, signal);
    await reaped;
    await successor.stop();
    const runs = instancesOf(jobId);
    expect(runs.map((instance) => instance.state)).toEqual(['terminated', 'terminated']);

    const report = ledger.report(scenario, [jobId], { vmsLeaked: fake.live().length });
    expect(report.problems).toEqual([]);
    expect(report).toMatchObject({ jobsRun: 1, jobsLost: 0, partsLost: 0, duplicateTerminalStates: 0, vmsLeaked: 0 });
  }

  it("redelivers the job to the next worker, which runs it to passed and reaps the killed worker's VM", async () => {
    await killMidScript('worker killed with SIGKILL mid-script', 7401, async (killed) => {
      killed.kill('SIGKILL');
    });
  });

  it('loses no job when SIGKILL follows SIGTERM while the worker drains (a stop timeout shorter than the drain)', async () => {
    await killMidScript('worker killed with SIGKILL while it drains after SIGTERM', 7402, async (killed, output) => {
      killed.kill('SIGTERM');
      // Killed once it drains, as systemd does when TimeoutStopSec passes first.
      const draining = (): boolean => output().includes('"state":"DRAINING"');
      if (!draining()) {
        await new Promise<void>((resolve) => {
          const onData = (): void => {
            if (!draining()) return;
            killed.stdout?.off('data', onData);
            resolve();
          };
          killed.stdout?.on('data', onData);
        });
      }
      killed.kill('SIGKILL');
    });
  });
});
