/**
 * The fault suite's ledger against hand-made runs on a real vhost: it must
 * accept what the worker legitimately does (reruns, abandoned runs,
 * duplicate copies) and catch each broken promise (a gap, two terminal
 * states, a lost job), or the fault scenarios prove nothing.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { LOG_QUEUE, REPORTING_EXCHANGE, STATE_QUEUE, logPartBody, stateUpdateBody } from '../../src/queue/amqp/messages.js';
import type { JobState } from '../../src/queue/contract.js';
import { startLedger, type JobLedger, type LedgerOptions, type LedgerReport } from '../helpers/job-ledger.js';
import { createVhost, publishRaw, type TestVhost } from '../helpers/rabbitmq.js';

let vhost: TestVhost;
let ledger: JobLedger | undefined;

beforeAll(async () => {
  vhost = await createVhost();
});
afterEach(async () => {
  await ledger?.close();
  ledger = undefined;
  vi.unstubAllEnvs();
});
afterAll(async () => {
  await vhost?.delete();
});

async function start(options: LedgerOptions = {}): Promise<JobLedger> {
  ledger = await startLedger(vhost.uri, options);
  return ledger;
}

const timeout = (): AbortSignal => AbortSignal.timeout(10_000);

/** One run of a job as the worker reports it; each call publishes (in order) and waits for the confirm. */
function run(jobId: number, uuid: string) {
  let count = 0;
  return {
    async states(...states: JobState[]): Promise<void> {
      for (const state of states) {
        await publishRaw(vhost.uri, '', STATE_QUEUE, stateUpdateBody({ jobId, state, count: count++, uuid, trace: false }));
      }
    },
    /** The same state update again (a publish retried after a lost confirm). */
    async again(state: JobState, atCount: number): Promise<void> {
      await publishRaw(vhost.uri, '', STATE_QUEUE, stateUpdateBody({ jobId, state, count: atCount, uuid, trace: false }));
    },
    async parts(...numbers: number[]): Promise<void> {
      for (const number of numbers) await this.part(number, `line ${number}\r\n`);
    },
    async part(number: number, content: string, final = false): Promise<void> {
      await publishRaw(vhost.uri, REPORTING_EXCHANGE, LOG_QUEUE, logPartBody(jobId, uuid, { number, content, final }));
    },
    async final(number: number): Promise<void> {
      await this.part(number, '', true);
    },
  };
}

const clean = (scenario: string, jobsRun: number): LedgerReport => ({
  scenario,
  jobsRun,
  jobsLost: 0,
  partsLost: 0,
  duplicateTerminalStates: 0,
  problems: [],
});

describe('job ledger', () => {
  it('accepts a finished run after an abandoned one, drops duplicate copies, and gives the latest run\'s log', async () => {
    const ledger = await start();
    const abandoned = run(1, 'aaaaaaaa-1');
    await abandoned.states('received', 'started');
    await abandoned.part(0, 'abandoned run\r\n');
    await abandoned.part(1, 'never finished\r\n');
    const finished = run(1, 'bbbbbbbb-1');
    await finished.states('received', 'started');
    await finished.parts(0, 1);
    await finished.part(1, 'line 1\r\n'); // a retried publish: same number, same body
    await finished.final(2);
    await finished.states('passed');
    await finished.again('passed', 2);

    await ledger.untilFinished([1], timeout());
    expect(ledger.states(1)).toEqual(['received', 'started', 'received', 'started', 'passed']);
    expect(ledger.log(1)).toBe('line 0\r\nline 1\r\n');
    expect(ledger.report('clean', [1])).toEqual(clean('clean', 1));
  });

  it('counts and names a gap in the finished log', async () => {
    const ledger = await start();
    const gap = run(2, 'cccccccc-2');
    await gap.states('received', 'started');
    await gap.parts(0, 1, 3);
    await gap.final(4);
    await gap.states('passed');

    await ledger.untilFinished([2], timeout());
    expect(ledger.report('gap', [2])).toEqual({
      ...clean('gap', 1),
      partsLost: 1,
      problems: ['job 2 run cccccccc (passed): 1 log part(s) missing below 4: 2'],
    });
  });

  it('counts a finished log without its final part, and a gap in an abandoned run', async () => {
    const ledger = await start();
    const abandoned = run(3, 'dddddddd-3');
    await abandoned.states('received', 'started');
    await abandoned.parts(0, 2);
    const unfinished = run(3, 'eeeeeeee-3');
    await unfinished.states('received', 'started');
    await unfinished.parts(0, 1);
    await unfinished.states('failed');

    await ledger.untilFinished([3], timeout());
    expect(ledger.report('no final', [3])).toEqual({
      ...clean('no final', 1),
      partsLost: 2,
      problems: [
        'job 3 run dddddddd (started): 1 log part(s) missing below 2: 1',
        'job 3 run eeeeeeee (failed): expected one final part, the last (1); final parts: none',
      ],
    });
  });

  it('finds a job that reached two terminal states', async () => {
    const ledger = await start();
    const first = run(4, 'ffffffff-4');
    await first.states('received', 'started');
    await first.final(0);
    await first.states('passed');
    const second = run(4, 'gggggggg-4');
    await second.states('received', 'started');
    await second.final(0);
    await second.states('failed');

    await ledger.untilFinished([4], timeout());
    expect(ledger.report('twice', [4])).toEqual({
      ...clean('twice', 1),
      duplicateTerminalStates: 1,
      problems: ['job 4 reached 2 terminal states (run ffffffff: received, started, passed; run gggggggg: received, started, failed)'],
    });
  });

  it('finds lost jobs: requeued and never run again, or never run at all', async () => {
    const ledger = await start();
    const requeued = run(5, 'hhhhhhhh-5');
    await requeued.states('received', 'started');
    await requeued.parts(0);
    await requeued.states('reset');
    await ledger.settled(timeout());

    expect(ledger.report('lost', [5, 6])).toEqual({
      ...clean('lost', 1),
      jobsLost: 2,
      problems: ['job 5 lost: no run reached exactly one terminal state (run hhhhhhhh: received, started, reset)', 'job 6 lost: no state update seen'],
    });
  });

  it('finds a log part that came twice with different bodies, and a message that is not one', async () => {
    const ledger = await start();
    const twice = run(7, 'iiiiiiii-7');
    await twice.states('received', 'started');
    await twice.part(0, 'one\r\n');
    await twice.part(0, 'other\r\n');
    await twice.final(1);
    await twice.states('passed');
    await publishRaw(vhost.uri, '', STATE_QUEUE, 'not json');

    await ledger.untilFinished([7], timeout());
    expect(ledger.report('conflict', [7]).problems).toEqual([
      'unreadable message on reporting.jobs.builds: "not json"',
      'job 7 run iiiiiiii: log part 0 came twice with different bodies',
    ]);
  });

  it('requeues a job once per reset (as the hub does), however often the reset is delivered', async () => {
    const requeued: number[] = [];
    const ledger = await start({ onReset: async (jobId) => void requeued.push(jobId) });
    const first = run(8, 'jjjjjjjj-8');
    await first.states('received', 'reset');
    await first.again('reset', 1);
    const second = run(8, 'kkkkkkkk-8');
    await second.states('received', 'started');
    await second.final(0);
    await second.states('passed');

    await ledger.untilFinished([8], timeout());
    expect(requeued).toEqual([8]);
    expect(ledger.report('requeued', [8])).toEqual(clean('requeued', 1));
  });

  it('names the jobs still unfinished, with their states, when the wait is aborted', async () => {
    const ledger = await start();
    await run(9, 'llllllll-9').states('received', 'started');
    await ledger.settled(timeout());
    const abort = new AbortController();
    const waiting = ledger.untilFinished([9, 10], abort.signal);
    abort.abort(new Error('test over'));
    await expect(waiting).rejects.toThrow('jobs without a terminal state: 9 (received, started); 10 (no state)');
  });

  it('resolves untilLogged once a run has logged the text, across parts', async () => {
    const ledger = await start();
    const logged = ledger.untilLogged(11, 'line 12', timeout());
    const chatty = run(11, 'mmmmmmmm-11');
    await chatty.states('received', 'started');
    await chatty.part(0, 'line 1');
    await chatty.part(1, '2\r\n');
    await expect(logged).resolves.toBeUndefined();
  });
});

describe('fault report', () => {
  const script = fileURLToPath(new URL('../../scripts/fault-report.mjs', import.meta.url));

  it('appends each report to MAYFLY_FAULT_REPORT, and the script prints them as a table with totals', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'mayfly-fault-report-'));
    try {
      const file = join(dir, 'faults.jsonl');
      vi.stubEnv('MAYFLY_FAULT_REPORT', file);
      const ledger = await start();
      const finished = run(12, 'nnnnnnnn-12');
      await finished.states('received', 'started');
      await finished.parts(0, 2);
      await finished.final(3);
      await finished.states('passed');
      await ledger.untilFinished([12], timeout());
      const leaky = ledger.report('sshd | killed', [12], { vmsLeaked: 2 });
      expect(leaky.problems).toEqual([
        'job 12 run nnnnnnnn (passed): 1 log part(s) missing below 3: 1',
        "2 VM(s) still live after the reaper's pass",
      ]);
      ledger.report('nothing run', [13]);
      // A notice's deadline: job 14 was requeued before it, job 15 after, job 16 never.
      const early = run(14, 'oooooooo-14');
      await early.states('received', 'started', 'reset');
      await ledger.settled(timeout());
      const deadline = Date.now() + 1;
      const late = run(15, 'pppppppp-15');
      await late.states('received', 'started', 'reset');
      await run(16, 'qqqqqqqq-16').states('received', 'started', 'passed');
      await ledger.settled(timeout());
      const spot = ledger.report('spot notice', [14, 15, 16], { deadline });
      expect(spot.requeuedBeforeDeadline).toBe(1);
      expect(spot.problems.filter((problem) => problem.includes('deadline'))).toEqual([
        expect.stringMatching(/^job 15 not requeued before the deadline \(.+\): requeued \d+ ms after it$/),
        expect.stringMatching(/^job 16 not requeued before the deadline \(.+\): never requeued$/),
      ]);

      const lines = (await readFile(file, 'utf8')).trim().split('\n');
      expect(lines.map((line) => JSON.parse(line) as LedgerReport)).toEqual([leaky, expect.objectContaining({ scenario: 'nothing run', jobsLost: 1 }), spot]);
      const { stdout } = await promisify(execFile)(process.execPath, [script, file]);
      expect(stdout.trim().split('\n')).toEqual([
        '| scenario | jobs run | jobs lost | log parts lost | VMs leaked | requeued before the deadline |',
        '|---|---:|---:|---:|---:|---:|',
        '| sshd \\| killed | 1 | 0 | 1 | 2 | - |',
        '| nothing run | 0 | 1 | 0 | - | - |',
        '| spot notice | 3 | 2 | 1 | - | 1 |',
        '| **3 scenarios** | 4 | 3 | 2 | 2 | 1 |',
      ]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
