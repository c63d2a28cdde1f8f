/**
 * The one table `npm run bench` prints, the same rows as JSON, and the
 * machine they were measured on.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, release, totalmem } from 'node:os';
import { dirname } from 'node:path';

/** Whether a row's target was met; `n/a` when the row has no target or could not be measured. */
export type Verdict = 'yes' | 'no' | 'n/a';

/** One line of the table. */
export interface Row {
  /** `overhead`, `throughput`, `logs`, `scale`. */
  scenario: string;
  metric: string;
  /** The worker's figure, formatted. */
  worker: string;
  /** The machine's raw limit measured in the same run, formatted; `—` when there is none. */
  baseline: string;
  /** The target (docs/benchmarks.md, "Targets"), in words; `—` when there is none. */
  target: string;
  met: Verdict;
  /** A short comment on `met` (the overhead added, the share reached). */
  note?: string;
  /** The numbers behind the formatted cells (milliseconds, MB/s, jobs/s, bytes...). */
  data?: Record<string, unknown>;
}

export interface Machine {
  cpuModel: string;
  cores: number;
  memoryBytes: number;
  node: string;
  kernel: string;
  openssh: string;
  rabbitmq: string;
  date: string;
}

export interface Results {
  machine: Machine;
  mode: 'full' | 'quick';
  scenarios: string[];
  durationSeconds: number;
  rows: Row[];
}

/** `ssh -V` prints its version on stderr. */
function opensshVersion(): string {
  try {
    return execFileSync('sh', ['-c', 'ssh -V 2>&1'], { encoding: 'utf8' }).trim();
  } catch {
    return 'OpenSSH client not installed';
  }
}

/** The machine, as far as the bench can tell; `rabbitmq` comes from the broker's connection properties. */
export function describeMachine(rabbitmq: string): Machine {
  const cpuList = cpus();
  return {
    cpuModel: cpuList[0]?.model.trim() ?? 'unknown',
    cores: cpuList.length,
    memoryBytes: totalmem(),
    node: process.version,
    kernel: release(),
    openssh: opensshVersion(),
    rabbitmq,
    date: new Date().toISOString(),
  };
}

function escapeCell(text: string): string {
  return text.replaceAll('|', '\\|').replaceAll('\n', ' ');
}

/** The rows as a Markdown table (what docs/benchmarks.md carries), with the machine underneath. */
export function renderTable(results: Results): string {
  const header = ['scenario', 'metric', 'worker', 'baseline (this machine)', 'target', 'met?'];
  const lines = [`| ${header.join(' | ')} |`, `|${header.map(() => '---').join('|')}|`];
  for (const row of results.rows) {
    const met = row.note ? `${row.met} (${row.note})` : row.met;
    lines.push(`| ${[row.scenario, row.metric, row.worker, row.baseline, row.target, met].map(escapeCell).join(' | ')} |`);
  }
  const m = results.machine;
  lines.push(
    '',
    `Machine: ${m.cpuModel}, ${m.cores} cores, ${(m.memoryBytes / 2 ** 30).toFixed(1)} GiB, ` +
      `Linux ${m.kernel}, Node ${m.node}, ${m.openssh}, RabbitMQ ${m.rabbitmq}; ` +
      `${results.mode} run of ${results.durationSeconds.toFixed(0)} s on ${m.date}.`,
  );
  return lines.join('\n');
}

export function writeResults(path: string, results: Results): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, `${JSON.stringify(results, null, 2)}\n`);
}
