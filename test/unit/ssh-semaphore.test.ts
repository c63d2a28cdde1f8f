/** The semaphore that caps concurrent SSH handshakes (src/ssh/semaphore.ts). */
import { describe, expect, it } from 'vitest';
import { Semaphore } from '../../src/ssh/semaphore.js';

const never = new AbortController().signal;

describe('Semaphore', () => {
  it('lets `limit` holders in at once and hands turns to waiters in arrival order', async () => {
    const semaphore = new Semaphore(2);
    const first = await semaphore.acquire(never);
    const second = await semaphore.acquire(never);
    const order: number[] = [];
    const third = semaphore.acquire(never).then((release) => (order.push(3), release));
    const fourth = semaphore.acquire(never).then((release) => (order.push(4), release));
    expect([semaphore.active, semaphore.waiting]).toEqual([2, 2]);

    first();
    const releaseThird = await third;
    expect(order).toEqual([3]);
    expect([semaphore.active, semaphore.waiting]).toEqual([2, 1]);
    second();
    (await fourth)();
    releaseThird();
    expect(order).toEqual([3, 4]);
    expect([semaphore.active, semaphore.waiting]).toEqual([0, 0]);
  });

  it('counts a release once however often it is called', async () => {
    const semaphore = new Semaphore(1);
    const release = await semaphore.acquire(never);
    const waiter = semaphore.acquire(never);
    release();
    release();
    const next = await waiter;
    expect(semaphore.active).toBe(1);
    next();
    expect(semaphore.active).toBe(0);
  });

  it('drops a waiter whose signal aborts, which then never holds a turn', async () => {
    const semaphore = new Semaphore(1);
    const release = await semaphore.acquire(never);
    const controller = new AbortController();
    const aborted = semaphore.acquire(controller.signal);
    const after = semaphore.acquire(never);
    controller.abort(new Error('gave up'));
    await expect(aborted).rejects.toThrow('gave up');
    expect(semaphore.waiting).toBe(1);
    release();
    (await after)();
    expect(semaphore.active).toBe(0);
  });

  it('rejects at once on an aborted signal and refuses a limit below 1', async () => {
    const controller = new AbortController();
    controller.abort(new Error('already'));
    await expect(new Semaphore(1).acquire(controller.signal)).rejects.toThrow('already');
    expect(() => new Semaphore(0)).toThrow(RangeError);
  });
});
