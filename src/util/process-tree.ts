/**
 * Killing a whole process tree on Linux. A process group kill misses
 * children that called setsid (daemons, `setsid sleep`), so the tree is also
 * walked through /proc and frozen before anything is killed (a killed
 * parent's children are re-parented and can't be found afterwards).
 */
import { readFileSync, readdirSync } from 'node:fs';

/** pid -> parent pid for every process visible in /proc. */
function parentsByPid(): Map<number, number> {
  const parents = new Map<number, number>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      // The command name (field 2) may contain spaces and parentheses: parse after the last ')'.
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      parents.set(Number(entry), Number(fields[1]));
    } catch {
      // The process exited while we looked.
    }
  }
  return parents;
}

/** Every descendant of `root` (not `root` itself). */
export function descendantsOf(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const [pid, ppid] of parentsByPid()) {
    const list = children.get(ppid) ?? [];
    list.push(pid);
    children.set(ppid, list);
  }
  const found: number[] = [];
  const pending = [root];
  while (pending.length > 0) {
    const pid = pending.pop() as number;
    for (const child of children.get(pid) ?? []) {
      found.push(child);
      pending.push(child);
    }
  }
  return found;
}

/** Rounds of freezing newly forked processes before killing a tree; a tree settles in one or two. */
const FREEZE_ROUNDS = 20;

/** Send `signal` to `pid` (a negative pid: its process group), ignoring a process that is gone. */
export function signalQuietly(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // Already gone.
  }
}

/**
 * Freeze (SIGSTOP) every descendant of `root` until the tree stops growing,
 * so that nothing forked while we look escapes by being re-parented.
 * Returns the frozen pids.
 */
function freezeDescendants(root: number): number[] {
  const frozen = new Set<number>();
  for (let round = 0; round < FREEZE_ROUNDS; round++) {
    const fresh = descendantsOf(root).filter((pid) => !frozen.has(pid));
    if (fresh.length === 0) break;
    for (const pid of fresh) {
      signalQuietly(pid, 'SIGSTOP');
      frozen.add(pid);
    }
  }
  return [...frozen];
}

/** SIGKILL every descendant of `root`, but not `root`. */
export function killDescendants(root: number): void {
  for (const pid of freezeDescendants(root)) signalQuietly(pid, 'SIGKILL');
}

/**
 * SIGKILL what is left of a process group whose leader has exited (its
 * background children). The leader's pid itself may be reused by now, so
 * only the group is signalled, which can't be reused while it has members.
 */
export function killProcessGroup(pgid: number): void {
  signalQuietly(-pgid, 'SIGKILL');
}

/**
 * SIGKILL `root`, its process group (it must lead one: spawn with
 * `detached: true`) and every descendant, wherever they moved.
 */
export function killProcessTree(root: number): void {
  const descendants = freezeDescendants(root);
  signalQuietly(-root, 'SIGKILL');
  signalQuietly(root, 'SIGKILL');
  for (const pid of descendants) signalQuietly(pid, 'SIGKILL');
}
