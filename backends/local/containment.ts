/**
 * Keeping all of a local job's processes together, so that all of them end
 * when the job ends: background processes, `setsid` children and
 * double-forked daemons alike (on a VM they would die with the VM).
 *
 * Three mechanisms, the strongest available chosen once per backend:
 * - `cgroup`: the job runs in a cgroup v2 of its own, created under the
 *   worker's own cgroup (root, or systemd's `Delegate=yes`); ending it is one
 *   write to `cgroup.kill` (Linux 5.14+), which no process can escape.
 * - `pid-namespace`: the job runs as PID 1 of a PID namespace of its own
 *   (`unshare --pid --fork --kill-child`; root, or unprivileged user
 *   namespaces). When the script exits the kernel kills everything left in
 *   the namespace; killing `unshare` kills the namespace.
 * - `session`: the fallback. The script leads a session and process group,
 *   and the process tree is walked through /proc. It misses a process that
 *   left the tree (double fork) once the script has exited.
 */
import { execFile } from 'node:child_process';
import { constants } from 'node:fs';
import { access, mkdir, readFile, rmdir, watch, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { promisify } from 'node:util';
import { killProcessGroup, killProcessTree } from '../../src/backend/kit.js';

export const CONTAINMENT_KINDS = ['auto', 'cgroup', 'pid-namespace', 'session'] as const;
export type ContainmentSetting = (typeof CONTAINMENT_KINDS)[number];
export type ContainmentKind = Exclude<ContainmentSetting, 'auto'>;

/** One job's processes, kept together. */
export interface JobContainer {
  /** `argv` wrapped so that it starts inside the container. */
  command(argv: string[]): string[];
  /**
   * Kill every process of the job. `root` is the pid spawned from
   * `command()`; `exited` says it has been reaped (its pid may be reused).
   */
  kill(root: number, exited: boolean): void;
  /** Kill what is left and free what the container holds; idempotent. */
  release(): Promise<void>;
}

/** How jobs are contained on this host. */
export interface Containment {
  readonly kind: ContainmentKind;
  /** A container for the job whose directory is `jobDir`. */
  create(jobDir: string): Promise<JobContainer>;
}

const run = promisify(execFile);

/** Find which mechanisms work here, the strongest first; `setting` names one to insist on. */
export async function chooseContainment(setting: ContainmentSetting): Promise<Containment | undefined> {
  const candidates: ContainmentKind[] = setting === 'auto' ? ['cgroup', 'pid-namespace', 'session'] : [setting];
  for (const kind of candidates) {
    const containment = await probe(kind);
    if (containment) return containment;
  }
  return undefined;
}

async function probe(kind: ContainmentKind): Promise<Containment | undefined> {
  switch (kind) {
    case 'cgroup': {
      const parent = await ownCgroupDir();
      return parent && (await cgroupsWork(parent)) ? cgroupContainment(parent) : undefined;
    }
    case 'pid-namespace':
      for (const prefix of UNSHARE_PREFIXES) {
        if (await run(prefix[0] as string, [...prefix.slice(1), 'true']).then(() => true, () => false)) return pidNamespaceContainment(prefix);
      }
      return undefined;
    case 'session':
      return sessionContainment;
  }
}

/** The worker's own cgroup v2 directory, if cgroup v2 is mounted. */
async function ownCgroupDir(): Promise<string | undefined> {
  const [membership, mounts] = await Promise.all([readFile('/proc/self/cgroup', 'utf8'), readFile('/proc/self/mountinfo', 'utf8')]);
  const path = membership
    .split('\n')
    .find((line) => line.startsWith('0::'))
    ?.slice('0::'.length);
  // mountinfo: "<id> <parent> <dev> <root> <mount point> <options> ... - <fs type> <source> <options>"
  const mountPoint = mounts
    .split('\n')
    .map((line) => line.split(' '))
    .find((fields) => fields[fields.indexOf('-') + 1] === 'cgroup2')?.[4];
  return path === undefined || mountPoint === undefined ? undefined : join(mountPoint, path);
}

/** Can we make a child cgroup here, and end it with `cgroup.kill`? */
async function cgroupsWork(parent: string): Promise<boolean> {
  const probeDir = join(parent, `mayfly-probe-${process.pid}`);
  try {
    await mkdir(probeDir);
    await access(join(probeDir, 'cgroup.kill'), constants.W_OK);
    return true;
  } catch {
    return false;
  } finally {
    await rmdir(probeDir).catch(() => undefined);
  }
}

function cgroupContainment(parent: string): Containment {
  return {
    kind: 'cgroup',
    async create(jobDir) {
      const dir = join(parent, `mayfly-${basename(jobDir)}`);
      await mkdir(dir);
      let released = false;
      const killAll = (): Promise<void> => writeFile(join(dir, 'cgroup.kill'), '1');
      return {
        // The shell moves itself into the cgroup before it becomes the
        // script, so every process of the job starts inside.
        command: (argv) => ['bash', '-c', 'echo 0 > "$0/cgroup.procs" && exec "$@"', dir, ...argv],
        // The root is signalled too: until the shell has joined the cgroup
        // (its first command), `cgroup.kill` would find nobody to kill.
        kill(root, exited) {
          if (!exited) killProcessTree(root);
          void killAll().catch(() => undefined);
        },
        async release() {
          if (released) return;
          await killAll();
          await untilEmpty(dir);
          await rmdir(dir);
          released = true;
        },
      };
    },
  };
}

/** Resolves once no process is left in cgroup `dir` (the kernel kills asynchronously). */
async function untilEmpty(dir: string): Promise<void> {
  const events = join(dir, 'cgroup.events');
  const populated = async (): Promise<boolean> => /^populated 1$/m.test(await readFile(events, 'utf8'));
  const stop = new AbortController();
  try {
    // Watch before looking, so a change between the two is not missed.
    const changes = watch(events, { signal: stop.signal })[Symbol.asyncIterator]();
    while (await populated()) await changes.next();
  } catch (err) {
    if ((err as Error).name !== 'AbortError') throw err;
  } finally {
    stop.abort();
  }
}

/** `unshare` as root, then as an unprivileged user in a user namespace of its own (keeping its uid). */
const UNSHARE_PREFIXES: string[][] = [
  ['unshare', '--pid', '--fork', '--kill-child', '--'],
  ['unshare', '--user', '--map-current-user', '--pid', '--fork', '--kill-child', '--'],
];

function pidNamespaceContainment(prefix: string[]): Containment {
  return {
    kind: 'pid-namespace',
    async create() {
      return {
        command: (argv) => [...prefix, ...argv],
        // Once `unshare` has exited, its namespace and everything in it are gone.
        kill(root, exited) {
          if (!exited) killProcessTree(root);
        },
        release: async () => undefined,
      };
    },
  };
}

const sessionContainment: Containment = {
  kind: 'session',
  async create() {
    return {
      command: (argv) => argv,
      kill: (root, exited) => (exited ? killProcessGroup(root) : killProcessTree(root)),
      release: async () => undefined,
    };
  },
};
