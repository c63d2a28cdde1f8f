/**
 * The qemu tests' `describe`: a missing QEMU or test guest fails them (one
 * failing test saying why and what builds it), never skips them.
 */
import { describe, it } from 'vitest';
import { qemuUnavailable } from './qemu.js';

/** `describe` when QEMU and the test guest are there; otherwise one failing test saying why. */
export function describeWithQemu(name: string, body: () => void): void {
  const unavailable = qemuUnavailable();
  if (unavailable === undefined) {
    describe(name, body);
    return;
  }
  describe(name, () => {
    it('needs QEMU and the test guest', () => {
      throw new Error(`${unavailable}: scripts/test-prerequisites.sh installs QEMU and builds the guest (as root)`);
    });
  });
}
