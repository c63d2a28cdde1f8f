import { describe, expect, it } from 'vitest';
import { JobStopController } from '../../src/job/stop.js';

describe('job stop reasons', () => {
  it('keeps the first reason', () => {
    const stop = new JobStopController();
    stop.stop({ kind: 'cancelled', reason: 'first' });
    stop.stop({ kind: 'shutdown' });
    expect(stop.reason).toEqual({ kind: 'cancelled', reason: 'first' });
    expect(stop.signal.aborted).toBe(true);
  });

  it('stops with the given reason when a linked signal aborts, and not once unlinked', () => {
    const shutdown = new AbortController();
    const stop = new JobStopController();
    stop.stopWhen(shutdown.signal, { kind: 'shutdown' });
    shutdown.abort();
    expect(stop.reason).toEqual({ kind: 'shutdown' });

    const lost = new AbortController();
    const other = new JobStopController();
    const unlink = other.stopWhen(lost.signal, { kind: 'delivery-lost' });
    unlink();
    lost.abort();
    expect(other.signal.aborted).toBe(false);
  });
});
