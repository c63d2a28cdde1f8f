/** What every scenario gets from the run: the broker, keys, temp space, and how to start things. */
import { join } from 'node:path';
import { BenchChild } from './child-process.js';
import type { BrokerClient } from './broker.js';
import type { Row } from './report.js';
import { startTargets, type ClientKey, type Resources, type Targets } from './resources.js';
import type { SshdTarget } from '../test/helpers/sshd.js';

export interface BenchContext {
  /** Reduced counts: validates the harness in about a minute. */
  quick: boolean;
  /** Aborted on Ctrl-C / SIGTERM. */
  signal: AbortSignal;
  resources: Resources;
  broker: BrokerClient;
  /** The run's vhost URI. */
  amqpUri: string;
  key: ClientKey;
  /** The run's temp directory (removed at the end). */
  tmp: string;
  /** Where worker logs go (the temp directory unless `--keep-logs DIR`). */
  logDir: string;
  /** `--profile DIR`: every worker writes a CPU profile there. */
  profileDir?: string;
  progress(message: string): void;
}

export interface Scenario {
  name: string;
  /** What it measures, for `--help`. */
  description: string;
  run(context: BenchContext): Promise<Row[]>;
}

let workerCount = 0;

/**
 * A worker child started with `env` on the run's vhost, amqp queue, and the
 * other settings given; `sequentialStart`: each script is fetched before its
 * instance is started (`StartWorkerOptions.sequentialStart`).
 */
export async function startBenchWorker(context: BenchContext, label: string, env: Record<string, string>, sequentialStart = false): Promise<BenchChild> {
  const child = new BenchChild(context.resources, `worker ${label}`, context.profileDir);
  workerCount += 1;
  await child.startWorker(
    { TRAVIS_WORKER_QUEUE_TYPE: 'amqp', TRAVIS_WORKER_AMQP_URI: context.amqpUri, ...env },
    join(context.logDir, `worker-${workerCount}-${label.replaceAll(/[^a-z0-9]+/gi, '-')}.log`),
    context.signal,
    sequentialStart,
  );
  return child;
}

/** The `TRAVIS_WORKER_SSH_*` settings for `targets`. */
export function sshEnv(context: BenchContext, targets: readonly SshdTarget[]): Record<string, string> {
  return {
    TRAVIS_WORKER_PROVIDER_NAME: 'ssh',
    TRAVIS_WORKER_SSH_HOSTS: targets.map((target) => `${target.host}:${target.port}`).join(','),
    TRAVIS_WORKER_SSH_USER: targets[0]?.username ?? 'root',
    TRAVIS_WORKER_SSH_KEY_PATH: context.key.path,
  };
}

export function targets(context: BenchContext, count: number): Promise<Targets> {
  return startTargets(context.resources, context.key, count, context.signal);
}

/** A row for a metric that could not be measured, saying why. */
export function failedRow(scenario: string, metric: string, err: unknown): Row {
  const message = err instanceof Error ? err.message : String(err);
  return { scenario, metric, worker: `not measured: ${message.slice(0, 160)}`, baseline: '—', target: '—', met: 'n/a' };
}

/** A fresh job id range per use, so that jobs of different scenarios never share an id. */
let nextJobId = 1_000_000;
export function jobIds(count: number): number[] {
  const first = nextJobId;
  nextJobId += count;
  return Array.from({ length: count }, (_, i) => first + i);
}
