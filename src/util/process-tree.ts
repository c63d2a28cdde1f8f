/**
 * Killing a whole process tree on Linux. A process group kill misses
 * children that called setsid (daemons, `setsid sleep`), so the tree is also
 * walked through /proc before anything is killed (a killed parent's children
 * are re-parented and can't be found afterwards).
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

function killQuietly(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // Already gone.
  }
}

/**
 * SIGKILL what is left of a process group whose leader has exited (its
 * background children). The leader's pid itself may be reused by now, so
 * only the group is signalled, which can't be reused while it has members.
 */
export function killProcessGroup(pgid: number): void {
  killQuietly(-pgid, 'SIGKILL');
}

/**
 * SIGKILL `root`, its process group (it must lead one: spawn with
 * `detached: true`) and every descendant, wherever they moved.
 */
export function killProcessTree(root: number): void {
  const descendants = descendantsOf(root);
  killQuietly(-root, 'SIGKILL');
  killQuietly(root, 'SIGKILL');
  for (const pid of descendants) killQuietly(pid, 'SIGKILL');
}
