/**
 * Pauses that start short and double up to a ceiling: a wait for something
 * that is usually nearly there (a VM reaching RUNNING, sshd starting) notices
 * it soon after it happens, while a long wait still asks no more often than
 * the ceiling (the configured poll interval) allows.
 */
export function* growingDelays(firstMs: number, ceilingMs: number): Generator<number, never> {
  let delay = Math.min(firstMs, ceilingMs);
  for (;;) {
    yield delay;
    delay = Math.min(delay * 2, ceilingMs);
  }
}
