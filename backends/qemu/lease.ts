/**
 * The label every VM of this backend carries, on disk and in the process
 * table: its directory under WORK_DIR is named `mayfly-job-<job id>-<random>`
 * (the process's `-name` and pidfile carry the same name) and holds
 * `lease.json` (the worker that made it, the job, when the lease expires).
 * The orphan reaper lists these and removes what a killed worker left:
 * its QEMU (found by the pidfile, and only when that process is QEMU
 * running this VM's files) and its directory.
 */
import { randomBytes } from 'node:crypto';
import { readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { abortableSleep, type ManagedInstance } from '../../src/backend/kit.js';
import { vmFiles } from './command.js';

/** The prefix of every VM's name: nothing else in WORK_DIR is ever listed or removed. */
export const VM_PREFIX = 'mayfly-job-';
const VM_NAME = /^mayfly-job-\d+-[0-9a-f]{8}$/;
/** Between checks that a killed orphan QEMU (not our child: no exit event) has gone. */
const GONE_POLL_MS = 50;

/** What `lease.json` says. */
export interface Lease {
  worker: string;
  jobId: number;
  repository: string;
  /** RFC 3339. */
  leaseExpiresAt: string;
  /** RFC 3339. */
  createdAt: string;
}

/** A fresh VM name for `jobId`. */
export function vmName(jobId: number): string {
  return `${VM_PREFIX}${jobId}-${randomBytes(4).toString('hex')}`;
}

export async function writeLease(path: string, lease: Lease): Promise<void> {
  await writeFile(path, `${JSON.stringify(lease)}\n`, { mode: 0o600 });
}

/** Every VM directory in `workDir` with a readable lease, as the reaper sees it. */
export async function listVms(workDir: string): Promise<ManagedInstance[]> {
  let names: string[];
  try {
    names = await readdir(workDir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  const found: ManagedInstance[] = [];
  for (const name of names.filter((entry) => VM_NAME.test(entry))) {
    const lease = await readLease(join(workDir, name));
    if (lease === undefined) continue;
    const instance: ManagedInstance = { id: name, worker: lease.worker, jobId: lease.jobId };
    const expires = Date.parse(lease.leaseExpiresAt);
    const created = Date.parse(lease.createdAt);
    if (!Number.isNaN(expires)) instance.leaseExpiresAt = new Date(expires);
    if (!Number.isNaN(created)) instance.createdAt = new Date(created);
    found.push(instance);
  }
  return found;
}

async function readLease(dir: string): Promise<Lease | undefined> {
  try {
    const lease = JSON.parse(await readFile(vmFiles(dir).lease, 'utf8')) as Partial<Lease>;
    if (typeof lease.worker !== 'string' || typeof lease.jobId !== 'number') return undefined;
    return lease as Lease;
  } catch {
    return undefined; // Being written, or not ours: the next pass looks again.
  }
}

/**
 * Kill the QEMU of the VM in `dir` (when its pidfile names a live QEMU that
 * runs this VM's disk: a reused pid is left alone), wait for it to go, and
 * remove the directory.
 */
export async function removeVm(dir: string, signal: AbortSignal): Promise<void> {
  const files = vmFiles(dir);
  const pid = Number((await readFile(files.pidfile, 'utf8').catch(() => '')).trim());
  if (Number.isInteger(pid) && pid > 0 && (await runsVm(pid, files.overlay))) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone already
    }
    while (await runsVm(pid, files.overlay)) await abortableSleep(GONE_POLL_MS, signal);
  }
  await rm(dir, { recursive: true, force: true });
}

/** Whether process `pid` is alive and its command line names `overlay` (so it is this VM's QEMU). */
async function runsVm(pid: number, overlay: string): Promise<boolean> {
  try {
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8');
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    // A zombie (state Z) has let go of everything; only its parent's wait removes it.
    if (/^\d+ \(.*\) Z/.test(stat)) return false;
    return cmdline.split('\0').some((arg) => arg.includes(`file=${overlay},`));
  } catch {
    return false;
  }
}
