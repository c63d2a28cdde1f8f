/**
 * The bench itself (started by bench/run.ts): measures each scenario of
 * docs/benchmarks.md against the real broker and real sshd, with the machine's raw
 * figures beside the worker's, prints one table and writes it as JSON.
 *
 *   node dist/bench/run.js [--quick] [--only overhead,throughput,logs,scale,qemu,job-start,warm-pool]
 *                          [--out FILE] [--keep-logs DIR]
 *
 * It reports and never fails: exit 0 whatever the figures (1 only when it
 * could not run at all, e.g. no broker; 130 when interrupted). Everything it
 * starts is released on the way out, on an error and on SIGTERM.
 */
import { mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { errorMessage } from '../src/errors.js';
import { BrokerClient } from './broker.js';
import { failedRow, type BenchContext, type Scenario } from './context.js';
import { describeMachine, renderTable, writeResults, type Results, type Row } from './report.js';
import { clientKey, createVhost, Resources, tempDir } from './resources.js';
import { overhead } from './scenarios/overhead.js';
import { throughput } from './scenarios/throughput.js';
import { logs } from './scenarios/logs.js';
import { scale } from './scenarios/scale.js';
import { qemu } from './scenarios/qemu.js';
import { jobStart } from './scenarios/job-start.js';
import { warmPool } from './scenarios/warm-pool.js';

const SCENARIOS: readonly Scenario[] = [overhead, throughput, logs, scale, qemu, jobStart, warmPool];
const DEFAULT_OUT = fileURLToPath(new URL('../../bench/results/latest.json', import.meta.url));

const USAGE = `usage: npm run bench -- [--quick] [--only NAME[,NAME...]] [--out FILE] [--keep-logs DIR] [--profile DIR]

  --quick       reduced counts: checks the harness in about a minute (figures are rough)
  --only        run only these scenarios
  --out         where the JSON goes (default bench/results/latest.json)
  --keep-logs   keep the workers' own logs (JSON lines) in DIR
  --profile     write a V8 CPU profile of every worker process to DIR (open in Chrome DevTools)

scenarios:
${SCENARIOS.map((s) => `  ${s.name.padEnd(12)}${s.description}`).join('\n')}

A full run takes about nine minutes on a 2-core machine (job-start's realistic boots about four of them); it prints one table
(Markdown) and writes the same rows, with the machine, as JSON.`;

interface Options {
  quick: boolean;
  only: Scenario[];
  out: string;
  keepLogs: string | undefined;
  profile: string | undefined;
}

function parseOptions(): Options {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      only: { type: 'string' },
      out: { type: 'string', default: DEFAULT_OUT },
      'keep-logs': { type: 'string' },
      profile: { type: 'string' },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  let only = [...SCENARIOS];
  if (values.only !== undefined) {
    const names = values.only.split(',').map((name) => name.trim()).filter((name) => name !== '');
    const unknown = names.filter((name) => !SCENARIOS.some((s) => s.name === name));
    if (unknown.length > 0) throw new Error(`unknown scenario ${unknown.join(', ')} (known: ${SCENARIOS.map((s) => s.name).join(', ')})`);
    only = SCENARIOS.filter((s) => names.includes(s.name));
  }
  return { quick: values.quick, only, out: values.out, keepLogs: values['keep-logs'], profile: values.profile };
}

async function main(): Promise<number> {
  let options: Options;
  try {
    options = parseOptions();
  } catch (err) {
    console.error(`bench: ${errorMessage(err)}\n\n${USAGE}`);
    return 1;
  }
  const began = performance.now();
  const progress = (message: string): void => {
    console.error(`[${((performance.now() - began) / 1000).toFixed(1).padStart(6)} s] ${message}`);
  };
  const interrupt = new AbortController();
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.on(signal, () => interrupt.abort(new Error(`interrupted (${signal})`)));
  }

  const resources = new Resources();
  try {
    progress('creating a vhost (rabbitmqctl takes a few seconds)');
    let vhost: { name: string; uri: string };
    let broker: BrokerClient;
    try {
      vhost = await createVhost(resources);
      broker = await BrokerClient.open(vhost.uri);
    } catch (err) {
      console.error(`bench: cannot run without RabbitMQ at 127.0.0.1:5672 (guest/guest) and rabbitmqctl: ${errorMessage(err)}`);
      return 1;
    }
    resources.add('bench broker connection', () => broker.close());
    const tmp = tempDir(resources);
    const logDir = options.keepLogs ?? tmp;
    mkdirSync(logDir, { recursive: true });
    if (options.profile !== undefined) mkdirSync(options.profile, { recursive: true });
    const context: BenchContext = {
      quick: options.quick,
      signal: interrupt.signal,
      resources,
      broker,
      amqpUri: vhost.uri,
      key: clientKey(tmp),
      tmp,
      logDir,
      ...(options.profile === undefined ? {} : { profileDir: options.profile }),
      progress,
    };

    const rows: Row[] = [];
    for (const scenario of options.only) {
      if (interrupt.signal.aborted) break;
      progress(`scenario ${scenario.name}`);
      try {
        rows.push(...(await scenario.run(context)));
      } catch (err) {
        if (interrupt.signal.aborted) break;
        rows.push(failedRow(scenario.name, 'scenario', err));
        progress(`scenario ${scenario.name} failed: ${errorMessage(err)}`);
      }
    }
    if (interrupt.signal.aborted) {
      progress('interrupted: no results written');
      return 130;
    }
    const results: Results = {
      machine: describeMachine(broker.serverVersion),
      mode: options.quick ? 'quick' : 'full',
      scenarios: options.only.map((s) => s.name),
      durationSeconds: (performance.now() - began) / 1000,
      rows,
    };
    console.log(renderTable(results));
    writeResults(options.out, results);
    progress(`results written to ${options.out}`);
    return 0;
  } finally {
    progress('cleaning up');
    await resources.releaseAll();
  }
}

process.exitCode = await main();
// Handles left by a scenario that was cut short must not keep the process alive.
setTimeout(() => process.exit(), 1_000).unref();
