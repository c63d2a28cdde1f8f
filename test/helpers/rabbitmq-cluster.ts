/**
 * A RabbitMQ cluster of its own for a test file: three nodes on loopback,
 * each with its own node name, AMQP and distribution ports and data
 * directory, started as the `rabbitmq` user (whose Erlang cookie the CLI
 * shares) next to the machine's broker on 5672, which stays untouched. The
 * nodes find each other at boot through classic-config peer discovery, so
 * all three boot at once instead of joining one by one (a `rabbitmqctl`
 * call costs about 2 s on a small machine). Boot once per file: about 25 s
 * on two cores.
 *
 * A node is stopped as a whole (its Erlang VM exits, as when a machine
 * goes away) and started again as a new process with the same name, ports
 * and data directory, so it rejoins with the queues it had. Stopping only
 * the RabbitMQ application (`stop_app`) leaves the VM up: after the whole
 * cluster went that way, `start_app` did not reliably bring it back.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chown, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './ports.js';
import { rabbitmqctl } from './rabbitmq.js';

/** Nodes of the cluster: the fewest a quorum queue keeps working with when one is down (a majority of three is two). */
export const CLUSTER_SIZE = 3;
/** The user the nodes run as: its home holds the Erlang cookie `rabbitmqctl` authenticates with. */
const RABBITMQ_USER = 'rabbitmq';
const RABBITMQ_HOME = '/var/lib/rabbitmq';
/** Longest a node may take to boot (or come back after `start`) on a loaded two-core machine. */
const NODE_STARTUP_TIMEOUT_S = 120;

export interface ClusterNode {
  /** Erlang node name, `mayfly-<tag>-<n>@localhost`. */
  name: string;
  port: number;
  /** guest's URI on this node, default vhost. */
  uri: string;
}

export interface RabbitCluster {
  readonly nodes: readonly ClusterNode[];
  /** Every node's URI, comma-separated, in `order` (indexes into `nodes`; all, in order, by default). */
  uris(order?: readonly number[]): string;
  /** Stop a node: its connections close and its Erlang VM exits. */
  stop(node: ClusterNode): Promise<void>;
  /** Freeze a node's Erlang VM (SIGSTOP), as a hung machine: its sockets stay open and nothing is answered. */
  freeze(node: ClusterNode): Promise<void>;
  /** Kill a node's Erlang VM (SIGKILL), frozen or not: its sockets reset, nothing is shut down cleanly. */
  kill(node: ClusterNode): Promise<void>;
  /**
   * Start a node again (same name, ports, data; a frozen one is killed
   * first) and wait until it serves. A node that was not stopped last waits
   * at boot for the peers it last saw, so after the whole cluster stopped,
   * start every node at once.
   */
  start(node: ClusterNode): Promise<void>;
  /** Stop every node and remove their directories. Never throws. */
  close(): Promise<void>;
}

interface RunningNode extends ClusterNode {
  dir: string;
  /** The node's environment for `rabbitmq-server`, the same on every start. */
  env: Record<string, string>;
  /** The node's latest `rabbitmq-server` process. */
  process: ChildProcess;
  /** Resolves when that process has exited. */
  exited: Promise<void>;
}

export async function startRabbitCluster(): Promise<RabbitCluster> {
  const tag = randomBytes(3).toString('hex');
  const base = await mkdtemp(join(tmpdir(), `mayfly-rabbit-${tag}-`));
  const names = Array.from({ length: CLUSTER_SIZE }, (_, index) => `mayfly-${tag}-${index + 1}@localhost`);
  const running: RunningNode[] = [];
  try {
    const ports = await distinctFreePorts(2 * CLUSTER_SIZE);
    for (const [index, name] of names.entries()) {
      running.push(await launch(base, name, names, ports[2 * index] as number, ports[2 * index + 1] as number));
    }
    await Promise.all(running.map((node) => awaitStartup(node)));
  } catch (err) {
    await stopAll(running, base);
    throw err;
  }
  return {
    nodes: running,
    uris: (order = running.map((_, index) => index)) => order.map((index) => (running[index] as RunningNode).uri).join(','),
    stop: (node) => stopNode(node as RunningNode),
    freeze: (node) => signalVm(node as RunningNode, 'SIGSTOP'),
    kill: (node) => killVm(node as RunningNode),
    start: async (node) => {
      const stopped = node as RunningNode;
      if (alive(stopped)) await killVm(stopped);
      // `rabbitmqctl wait` would read the last VM's pid.
      await rm(pidFile(stopped), { force: true });
      Object.assign(stopped, spawnServer(stopped.env));
      await awaitStartup(stopped);
    },
    close: () => stopAll(running, base),
  };
}

/** `count` ports nothing listens on, all different: the kernel may hand out a port again once it is free. */
async function distinctFreePorts(count: number): Promise<number[]> {
  const ports = new Set<number>();
  while (ports.size < count) ports.add(await freePort());
  return [...ports];
}

async function launch(base: string, name: string, peers: readonly string[], port: number, distPort: number): Promise<RunningNode> {
  const dir = join(base, name.split('@')[0] as string);
  await mkdir(join(dir, 'mnesia'), { recursive: true });
  await mkdir(join(dir, 'log'));
  const config = [
    `listeners.tcp.local = 127.0.0.1:${port}`,
    'cluster_formation.peer_discovery_backend = classic_config',
    ...peers.map((peer, index) => `cluster_formation.classic_config.nodes.${index + 1} = ${peer}`),
  ];
  await writeFile(join(dir, 'rabbitmq.conf'), `${config.join('\n')}\n`);
  await writeFile(join(dir, 'enabled_plugins'), '[].\n');
  const { uid, gid } = await rabbitmqIds();
  for (const path of [base, dir, join(dir, 'mnesia'), join(dir, 'log'), join(dir, 'rabbitmq.conf'), join(dir, 'enabled_plugins')]) await chown(path, uid, gid);

  const env: Record<string, string> = {
    HOME: RABBITMQ_HOME,
    RABBITMQ_NODENAME: name,
    RABBITMQ_DIST_PORT: String(distPort),
    RABBITMQ_MNESIA_BASE: join(dir, 'mnesia'),
    RABBITMQ_LOG_BASE: join(dir, 'log'),
    RABBITMQ_CONFIG_FILE: join(dir, 'rabbitmq.conf'),
    RABBITMQ_ENABLED_PLUGINS_FILE: join(dir, 'enabled_plugins'),
    RABBITMQ_PID_FILE: join(dir, 'pid'),
  };
  return { name, port, uri: `amqp://guest:guest@127.0.0.1:${port}`, dir, env, ...spawnServer(env) };
}

/** Run a node's `rabbitmq-server` (again) as the rabbitmq user. */
function spawnServer(env: Record<string, string>): Pick<RunningNode, 'process' | 'exited'> {
  const args = ['-u', RABBITMQ_USER, '--', 'env', ...Object.entries(env).map(([key, value]) => `${key}=${value}`), 'rabbitmq-server'];
  const child = spawn('runuser', args, { stdio: 'ignore' });
  child.once('error', () => undefined);
  return { process: child, exited: new Promise<void>((resolve) => child.once('exit', () => resolve())) };
}

const pidFile = (node: RunningNode): string => join(node.dir, 'pid');
const alive = (node: RunningNode): boolean => node.process.exitCode === null && node.process.signalCode === null;

/** Signal the node's Erlang VM, whose pid `rabbitmq-server` writes to its pid file (the process spawned is `runuser`). */
async function signalVm(node: RunningNode, signal: NodeJS.Signals): Promise<void> {
  process.kill(Number((await readFile(pidFile(node), 'utf8')).trim()), signal);
}

/** `rabbitmq-server` exits once its VM is gone. */
async function killVm(node: RunningNode): Promise<void> {
  await signalVm(node, 'SIGKILL');
  await node.exited;
}

/** `rabbitmqctl stop` returns once the node is down; its process may take a moment longer to exit. */
async function stopNode(node: RunningNode): Promise<void> {
  await rabbitmqctl('-n', node.name, 'stop');
  await node.exited;
}

async function awaitStartup(node: RunningNode): Promise<void> {
  let waiting = true;
  const exited = node.exited.then(async () => {
    if (waiting) throw new Error(`RabbitMQ node ${node.name} exited while starting: ${await logTail(node)}`);
  });
  try {
    // `wait` waits for the pid file, then for the node: `await_startup` fails at once on a node not registered yet.
    await Promise.race([rabbitmqctl('-n', node.name, 'wait', pidFile(node), '--timeout', String(NODE_STARTUP_TIMEOUT_S)), exited]);
  } finally {
    waiting = false;
  }
}

async function logTail(node: RunningNode): Promise<string> {
  const text = await readFile(join(node.dir, 'log', `${node.name}.log`), 'utf8').catch(() => '(no log)');
  return text.split('\n').slice(-20).join('\n');
}

async function stopAll(nodes: readonly RunningNode[], base: string): Promise<void> {
  await Promise.all(
    nodes.filter(alive).map(async (node) => {
      // A frozen node would not answer `stop`.
      await signalVm(node, 'SIGCONT').catch(() => undefined);
      await stopNode(node).catch(() => node.process.kill('SIGTERM'));
      await node.exited;
    }),
  );
  await rm(base, { recursive: true, force: true });
}

async function rabbitmqIds(): Promise<{ uid: number; gid: number }> {
  const passwd = await readFile('/etc/passwd', 'utf8');
  const entry = passwd.split('\n').find((line) => line.startsWith(`${RABBITMQ_USER}:`));
  if (!entry) throw new Error(`no ${RABBITMQ_USER} user: install rabbitmq-server`);
  const [, , uid, gid] = entry.split(':');
  return { uid: Number(uid), gid: Number(gid) };
}
