/**
 * A RabbitMQ cluster of three nodes (test/helpers/rabbitmq-cluster.ts) with
 * quorum queues, the worker given every node:
 * - the node the worker is connected to stops mid-script: the worker moves
 *   to the next node, the job is redelivered there and passes, exactly one
 *   terminal state, the finishing run's log complete;
 * - the node the log parts go to stops mid-script: the job goes on, the
 *   unconfirmed parts go out again on another node, none is lost;
 * - the node that leads the reporting queues and carries the log parts
 *   hangs, then dies, with parts and a state update unconfirmed: the parts
 *   go out again on another node, the state update is confirmed once the
 *   queue has a new leader, none is lost;
 * - every node stops, with a job running and one queued, then all come
 *   back: the worker waits (not ready meanwhile), never stops, and runs
 *   both jobs to the end.
 * Read from the broker by the job ledger, as test/fault/broker.test.ts does.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { BROKER_NODES_HEADER } from '../../src/control/routes.js';
import { errorMessage } from '../../src/errors.js';
import type { Logger } from '../../src/logger.js';
import { LOG_QUEUE, STATE_QUEUE } from '../../src/queue/amqp/messages.js';
import { maskUrl } from '../../src/redact.js';
import { startBuildApi, type FakeBuildApi } from '../helpers/build-api.js';
import { ENDLESS_SCRIPT, FINISHING_SCRIPT, SLOW_SCRIPT, faultPayload } from '../helpers/fault-jobs.js';
import { declareReporting, startLedger, type JobLedger } from '../helpers/job-ledger.js';
import { captureLog, type CapturedLog } from '../helpers/log-capture.js';
import { startRabbitCluster, type ClusterNode, type RabbitCluster } from '../helpers/rabbitmq-cluster.js';
import { publishRaw, purge, rabbitmqctl, withChannel } from '../helpers/rabbitmq.js';
import { allPaused, basicAuth, startTestWorker, untilProcessors, type TestWorker } from '../helpers/worker.js';

const QUEUE = 'builds.cluster';
/** The local backend runs scripts without a terminal: lines end in a bare newline. */
const SLOW_LAST_LINE = 'line 60\n';
const FINISHING_LAST_LINE = 'line 500\n';
const FIFTH_LINE = 'line 5\n';
/** The last line of the streaming job in the in-flight scenario. */
const STREAM_END = 'streamed';
const CONTROL_AUTH = 'operator:cluster-suite';
/** Booting three nodes at once takes about 25 s on two cores. */
const CLUSTER_BOOT_TIMEOUT_MS = 150_000;
/** The whole-cluster scenario up to the cluster's stop and the worker's pause, stops included. */
const BEFORE_RESTART_MS = 90_000;
/**
 * How long the jobs of the whole-cluster scenario may take once every node
 * is back. RabbitMQ may keep the worker's consumer and deliver it nothing
 * (a queue's member on the consumer's node stayed down): the worker then
 * consumes again after a minute and moves to another node after two
 * (src/queue/amqp/source.ts). A consume that reaches a node before its
 * quorum queues have a leader waits too (once 65 s, ended by the broker
 * closing the connection; the worker then connects again).
 */
const AFTER_RESTART_MS = 240_000;
/** The worker log lines shown when a scenario fails. */
const LOG_LINES_SHOWN = 40;

describe('fault: a RabbitMQ cluster with quorum queues', () => {
  let cluster: RabbitCluster;
  let buildApi: FakeBuildApi;
  let scriptsDir: string;
  let worker: TestWorker | undefined;
  const ledgers: JobLedger[] = [];
  /** Nodes a test stopped: started again after it, so each test begins with the whole cluster. */
  const stopped = new Set<ClusterNode>();

  beforeAll(async () => {
    cluster = await startRabbitCluster();
    buildApi = await startBuildApi();
    scriptsDir = await mkdtemp(join(tmpdir(), 'mayfly-cluster-'));
  }, CLUSTER_BOOT_TIMEOUT_MS);

  afterEach(async () => {
    await worker?.stop();
    worker = undefined;
    for (const ledger of ledgers.splice(0)) await ledger.close();
    await Promise.all([...stopped].map((node) => cluster.start(node)));
    stopped.clear();
    // A job of a failed test would keep the next test's worker busy.
    await purge(node(2).uri, QUEUE, STATE_QUEUE, LOG_QUEUE);
  }, 60_000);

  afterAll(async () => {
    buildApi?.close();
    await cluster?.close();
    if (scriptsDir) await rm(scriptsDir, { recursive: true, force: true });
  }, 60_000);

  const node = (index: number): ClusterNode => cluster.nodes[index] as ClusterNode;
  const payload = (id: number): string => faultPayload(QUEUE, id);

  async function stop(...nodes: ClusterNode[]): Promise<void> {
    for (const one of nodes) stopped.add(one);
    await Promise.all(nodes.map((one) => cluster.stop(one)));
  }

  /** A worker on the local backend, quorum queues, fast heartbeat and reconnect; connections as `env` says. */
  async function startWorker(env: Record<string, string>, logger?: Logger): Promise<TestWorker> {
    worker = await startTestWorker(
      {
        TRAVIS_WORKER_PROVIDER_NAME: 'local',
        TRAVIS_WORKER_LOCAL_SCRIPTS_DIR: scriptsDir,
        TRAVIS_WORKER_BUILD_API_URI: buildApi.uri,
        TRAVIS_WORKER_QUEUE_TYPE: 'amqp',
        TRAVIS_WORKER_QUEUE_NAME: QUEUE,
        TRAVIS_WORKER_AMQP_QUEUE_TYPE: 'quorum',
        TRAVIS_WORKER_AMQP_HEARTBEAT: '1s',
        TRAVIS_WORKER_AMQP_RECONNECT_BACKOFF: '100ms',
        TRAVIS_WORKER_AMQP_RECONNECT_MAX_BACKOFF: '500ms',
        ...env,
      },
      logger,
    );
    return worker;
  }

  /** The ledger on `on`, a node the test leaves running; a `reset` puts the job back on the queue. */
  async function openLedger(on: ClusterNode): Promise<JobLedger> {
    const ledger = await startLedger(on.uri, { quorum: true, onReset: (id) => publishRaw(on.uri, '', QUEUE, payload(id)) });
    ledgers.push(ledger);
    return ledger;
  }

  /** `/ready` (a header) and `/metrics` name `inUse` as the jobs connection's node, its password masked; `before`, used earlier, is at 0. */
  async function expectNodeInUse(running: TestWorker, inUse: ClusterNode, before?: ClusterNode): Promise<void> {
    const shown = maskUrl(inUse.uri);
    expect(shown).not.toContain('guest:guest');
    const ready = await fetch(`${running.worker.controlUrl}/ready`);
    expect(ready.headers.get(BROKER_NODES_HEADER)).toBe(`jobs=${shown}`);
    const metrics = await (await fetch(`${running.worker.controlUrl}/metrics`, { headers: { authorization: basicAuth(CONTROL_AUTH) } })).text();
    const series = metrics.split('\n').filter((line) => line.startsWith('mayfly_broker_node{'));
    const expected = [`mayfly_broker_node{queue="amqp",role="jobs",node="${shown}"} 1`];
    if (before) expected.push(`mayfly_broker_node{queue="amqp",role="jobs",node="${maskUrl(before.uri)}"} 0`);
    expect(series.sort()).toEqual(expected.sort());
  }

  /** Each queue's leader node (classic queues: their node), asked of a node that is up. */
  async function queueLeaders(): Promise<Record<string, string>> {
    const rows = await rabbitmqctl('-n', node(2).name, 'list_queues', '--no-table-headers', 'name', 'leader');
    return Object.fromEntries(rows.trim().split('\n').map((row) => row.split('\t')));
  }

  /** `waiting`, its failure carrying the worker's last log lines: what it was doing meanwhile. */
  async function withWorkerLog<T>(log: CapturedLog, waiting: Promise<T>): Promise<T> {
    try {
      return await waiting;
    } catch (err) {
      const lines = log.lines.slice(-LOG_LINES_SHOWN).map((line) => JSON.stringify(line));
      throw new Error(`${errorMessage(err)}\nthe worker's last log lines:\n${lines.join('\n')}`, { cause: err });
    }
  }

  function expectCleanReport(ledger: JobLedger, scenario: string, jobId: number): void {
    const report = ledger.report(scenario, [jobId]);
    expect(report.problems).toEqual([]);
    expect(report).toMatchObject({ jobsRun: 1, jobsLost: 0, partsLost: 0, duplicateTerminalStates: 0 });
  }

  it('the node the worker is connected to stops mid-script: it moves to the next node, the redelivered job passes once, its log complete', async () => {
    const jobId = 7401;
    const signal = AbortSignal.timeout(40_000);
    const journal = await openLedger(node(2));
    buildApi.scripts.set(jobId, ENDLESS_SCRIPT);
    const log = captureLog();
    const running = await startWorker(
      { TRAVIS_WORKER_AMQP_URI: cluster.uris(), TRAVIS_WORKER_REMOTE_CONTROLLER_ADDR: '127.0.0.1:0', TRAVIS_WORKER_REMOTE_CONTROLLER_AUTH: CONTROL_AUTH },
      log.logger,
    );
    const firstRun = running.jobDone(jobId);
    await publishRaw(node(2).uri, '', QUEUE, payload(jobId));
    await journal.untilLogged(jobId, FIFTH_LINE, signal);
    buildApi.scripts.set(jobId, FINISHING_SCRIPT);
    await expectNodeInUse(running, node(0));

    await stop(node(0));

    expect((await firstRun).result).toEqual({ outcome: 'abandoned', cause: 'delivery-lost' });
    await journal.untilFinished([jobId], signal);
    await journal.untilLogged(jobId, FINISHING_LAST_LINE, signal);
    expect(journal.states(jobId)).toEqual(['received', 'started', 'received', 'started', 'passed']);
    const nodesUsed = log.lines.filter((line) => /^(re)?connected to the broker$/.test(line.msg ?? '')).map((line) => line['uri']);
    expect(nodesUsed).toEqual([maskUrl(node(0).uri), maskUrl(node(1).uri), maskUrl(node(1).uri)]);
    await expectNodeInUse(running, node(1), node(0));
    expectCleanReport(journal, 'cluster: the connected node stops mid-script', jobId);
  }, 60_000);

  it('the node log parts go to stops mid-script: the job goes on, unconfirmed parts go out again on another node, none is lost', async () => {
    const jobId = 7402;
    const signal = AbortSignal.timeout(40_000);
    const journal = await openLedger(node(2));
    buildApi.scripts.set(jobId, SLOW_SCRIPT);
    const running = await startWorker({ TRAVIS_WORKER_AMQP_URI: cluster.uris([0, 2]), TRAVIS_WORKER_LOGS_AMQP_URI: cluster.uris([1, 2]) });
    const done = running.jobDone(jobId);
    await publishRaw(node(2).uri, '', QUEUE, payload(jobId));
    await journal.untilLogged(jobId, FIFTH_LINE, signal);

    await stop(node(1));

    expect((await done).result).toEqual({ outcome: 'finished', state: 'passed' });
    await journal.untilFinished([jobId], signal);
    await journal.untilLogged(jobId, SLOW_LAST_LINE, signal);
    expect(journal.states(jobId)).toEqual(['received', 'started', 'passed']);
    expectCleanReport(journal, 'cluster: the logs node stops mid-script', jobId);
  }, 60_000);

  it('the node that leads the reporting queues and carries the log parts hangs, then dies, with both in flight: parts go again on another node, state updates are confirmed by the new leader, none is lost', async () => {
    const [streamingId, warmUpId, arrivingId] = [7405, 7406, 7407];
    const signal = AbortSignal.timeout(90_000);
    const endFile = join(scriptsDir, `end-${streamingId}`);
    buildApi.scripts.set(streamingId, `while [ ! -e ${endFile} ]; do seq 1 1000; sleep 0.02; done; echo ${STREAM_END}`);
    buildApi.scripts.set(warmUpId, FINISHING_SCRIPT);
    buildApi.scripts.set(arrivingId, FINISHING_SCRIPT);
    // Queues made afresh, so node 1 leads the reporting queues and node 0 (the worker's jobs node) the job queue.
    await withChannel(node(1).uri, async (channel) => {
      for (const queue of [QUEUE, STATE_QUEUE, LOG_QUEUE]) await channel.deleteQueue(queue);
      await declareReporting(channel, { quorum: true });
    });
    const journal = await openLedger(node(2));
    const log = captureLog();
    await startWorker(
      { TRAVIS_WORKER_AMQP_URI: cluster.uris([0, 2]), TRAVIS_WORKER_LOGS_AMQP_URI: cluster.uris([1, 2]), TRAVIS_WORKER_POOL_SIZE: '2' },
      log.logger,
    );
    expect(await queueLeaders()).toMatchObject({ [QUEUE]: node(0).name, [STATE_QUEUE]: node(1).name, [LOG_QUEUE]: node(1).name });
    await publishRaw(node(0).uri, '', QUEUE, payload(streamingId));
    await journal.untilLogged(streamingId, '\n1000\n', signal);
    // A job on the other processor opens its state channel, so the next job's first state update goes out at once.
    await publishRaw(node(0).uri, '', QUEUE, payload(warmUpId));
    await journal.untilFinished([warmUpId], signal);

    stopped.add(node(1));
    await cluster.freeze(node(1));
    await publishRaw(node(0).uri, '', QUEUE, payload(arrivingId));
    await log.waitFor((line) => line.msg === 'job received' && line['job_id'] === arrivingId, signal);
    // Nothing sent to node 1 since it froze is confirmed: the streaming job's window of log parts, the arriving job's `received`.
    await cluster.kill(node(1));
    await writeFile(endFile, '');

    await journal.untilFinished([streamingId, arrivingId], signal);
    await journal.untilLogged(streamingId, `${STREAM_END}\n`, signal);
    await journal.untilLogged(arrivingId, FINISHING_LAST_LINE, signal);
    for (const id of [streamingId, warmUpId, arrivingId]) expect(journal.states(id)).toEqual(['received', 'started', 'passed']);
    const resent = log.lines.filter((line) => line.msg === 'log parts were not confirmed by the broker; publishing them again with their numbers');
    expect(resent.length).toBeGreaterThan(0);
    expect(resent.every((line) => Number(line['unconfirmed']) > 0)).toBe(true);
    const report = journal.report('cluster: the node leading the reporting queues and carrying the log parts hangs, then dies', [streamingId, warmUpId, arrivingId]);
    expect(report.problems).toEqual([]);
    expect(report).toMatchObject({ jobsRun: 3, jobsLost: 0, partsLost: 0, duplicateTerminalStates: 0 });
  }, 120_000);

  it('the whole cluster stops with a job running and one queued, then comes back: the worker waits, never stops, and runs both to the end', async () => {
    const [runningId, queuedId] = [7403, 7404];
    const signal = AbortSignal.timeout(BEFORE_RESTART_MS);
    const journal = await openLedger(node(2));
    buildApi.scripts.set(runningId, ENDLESS_SCRIPT);
    buildApi.scripts.set(queuedId, FINISHING_SCRIPT);
    const log = captureLog();
    const running = await startWorker(
      { TRAVIS_WORKER_AMQP_URI: cluster.uris(), TRAVIS_WORKER_REMOTE_CONTROLLER_ADDR: '127.0.0.1:0', TRAVIS_WORKER_REMOTE_CONTROLLER_AUTH: CONTROL_AUTH },
      log.logger,
    );
    const lifecycle: string[] = [];
    running.worker.events.on('state', (to) => lifecycle.push(to));
    const firstRun = running.jobDone(runningId);
    await publishRaw(node(2).uri, '', QUEUE, payload(runningId));
    await journal.untilLogged(runningId, FIFTH_LINE, signal);
    // One processor: this job waits in the queue through the outage.
    await publishRaw(node(2).uri, '', QUEUE, payload(queuedId));
    buildApi.scripts.set(runningId, FINISHING_SCRIPT);

    await stop(...cluster.nodes);

    expect((await firstRun).result).toEqual({ outcome: 'abandoned', cause: 'delivery-lost' });
    await untilProcessors(running.worker, allPaused, signal);
    const away = await fetch(`${running.worker.controlUrl}/ready`);
    expect(away.status).toBe(503);
    expect(await away.text()).toMatch(/reconnecting to the jobs broker/);

    // A node waits at boot for the peers it last saw: all three start at once, as after a power cut.
    await Promise.all(cluster.nodes.map((one) => cluster.start(one)));
    stopped.clear();
    const back = AbortSignal.timeout(AFTER_RESTART_MS);
    await journal.reconnect(node(2).uri, back);
    await withWorkerLog(log, journal.untilFinished([runningId, queuedId], back));
    await journal.untilLogged(runningId, FINISHING_LAST_LINE, back);
    await journal.untilLogged(queuedId, FINISHING_LAST_LINE, back);

    // While the nodes stop one by one, the worker may reconnect to one about to go and lose a delivery again.
    for (const id of [runningId, queuedId]) expect(journal.states(id).slice(-3)).toEqual(['received', 'started', 'passed']);
    expect((await fetch(`${running.worker.controlUrl}/ready`)).status).toBe(200);
    expect(lifecycle).toEqual([]);
    expect(running.worker.state).toBe('RUNNING');
    const report = journal.report('cluster: every node stops with a job running and one queued, then comes back', [runningId, queuedId]);
    expect(report.problems).toEqual([]);
    expect(report).toMatchObject({ jobsRun: 2, jobsLost: 0, partsLost: 0, duplicateTerminalStates: 0 });
  }, BEFORE_RESTART_MS + CLUSTER_BOOT_TIMEOUT_MS + AFTER_RESTART_MS);
});
