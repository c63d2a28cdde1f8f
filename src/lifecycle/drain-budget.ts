/**
 * How long a drain lets running jobs go on. Without a deadline, the
 * shutdown timeout. A notice from the cloud (a spot interruption, a
 * preemption) says when the host goes away: the jobs then get what is left
 * before that deadline, less the margin kept to requeue them and destroy
 * their instances, and never more than the shutdown timeout. A deadline too
 * near (or past) leaves no budget: the jobs are requeued at once.
 */
export function drainBudgetMs(shutdownMs: number, deadline: { at: number; marginMs: number } | undefined, now: number): number {
  if (deadline === undefined) return shutdownMs;
  return Math.max(0, Math.min(shutdownMs, deadline.at - now - deadline.marginMs));
}
