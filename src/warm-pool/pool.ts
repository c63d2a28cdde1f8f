/**
 * The warm pool (docs/warm-pool.md): machines booted ahead of jobs, probed
 * over SSH, and handed to the next job whose attributes map to the same
 * machine shape (`Backend.shape`). It is a `Backend` around the backend, so
 * the job pipeline only ever calls `start` and `destroy`: a hit returns an
 * idle instance at once, a miss starts one as before. Each instance serves
 * one job and is destroyed after it like any other.
 *
 * Safety, in one place:
 * - pool boots go through the same backend (its rate limit, labels and
 *   leases) wrapped by `HeldInstances`, so the reaper never takes a pooled
 *   instance of this process and takes those of a killed one;
 * - a warm instance's lease is booked for its whole life at boot: its idle
 *   life (`maxAgeMs`) plus the hard timeout of the job it will serve, and a
 *   job whose own hard limit would outlive that lease is not given it;
 * - no boot while the circuit breaker is not closed; a boot that passes
 *   its probe counts as a working start, a failed boot or probe as a failed
 *   one (unless the backend had no room: jobs come first), and after a
 *   failure the next boot waits, longer after each failure in a row;
 * - idle + booting never exceeds `size`;
 * - `drain` (on drain and stop) aborts the boots and destroys every idle
 *   instance before anything else closes.
 *
 * Over the usual size: these rules hold only together (a boot, its probe,
 * its lease and the drain share one count); what can stand apart does
 * (demand.ts, types.ts, src/backend/delegating-instance.ts).
 */
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { isStartFailureCode } from '../backend/breaker.js';
import type { Backend, Instance, MachineShape, StartAttributes, StartOptions } from '../backend/contract.js';
import { DelegatingInstance } from '../backend/delegating-instance.js';
import { NoCapacityError, errorMessage, isMayflyError } from '../errors.js';
import type { Logger } from '../logger.js';
import { raceAbort } from '../util/abort.js';
import { timeoutSignal } from '../util/timers.js';
import { Demand } from './demand.js';
import type { EvictReason, WarmPoolEvents, WarmPoolOptions, WarmPoolStatus } from './types.js';

/** The job id label of a warm instance: no job yet (job ids start at 1). */
export const WARM_JOB_ID = 0;
/** The repository label of a warm instance; a random name follows, so names built from it never collide. */
export const WARM_OWNER = 'mayfly-warm-pool';
/**
 * Between freshness checks (ages, and whether each shape still resolves to
 * the same image), in ms. Image lookups are cached by the backends for
 * minutes (gce: 5), so checking more often would find nothing new.
 */
export const FRESHNESS_CHECK_MS = 60_000;
/** Adaptive mode: the targets are recomputed at least this many times per window as demand decays. */
const DECAY_STEPS_PER_WINDOW = 20;
/**
 * After a failed pool boot, the next waits this long, in ms, doubling with
 * each failure in a row up to `MAX_BOOT_RETRY_MS`: a backend without room
 * (or one that keeps failing below the breaker's threshold) is not asked
 * again at once.
 */
export const BOOT_RETRY_MS = 5_000;
const MAX_BOOT_RETRY_MS = 5 * 60_000;
/**
 * A warm instance is probed once more when a job comes for it (over its
 * open connection: one round trip), for at most this long, in ms: a VM
 * preempted or a container killed while idle goes, and the job gets
 * another instead of failing on it.
 */
const HIT_CHECK_TIMEOUT_MS = 5_000;
/** Destroying one warm instance may take this long (a cloud delete); then the reaper's lease takes over. */
const DESTROY_TIMEOUT_MS = 5 * 60_000;

interface Idle {
  instance: Instance;
  shape: string;
  image: string;
  /** When its boot began (its lease and age count from here), ms since the epoch. */
  bootedAt: number;
  /** When it passed its probe. */
  readyAt: number;
  /** Until when its lease covers a job, ms since the epoch. */
  leaseUntil: number;
}

export class WarmPool implements Backend {
  readonly events = new EventEmitter<WarmPoolEvents>();
  readonly #options: WarmPoolOptions;
  readonly #backend: WarmPoolOptions['backend'];
  readonly #demand: Demand<StartAttributes>;
  readonly #idle: Idle[] = [];
  /** Shape -> boots in flight. */
  readonly #booting = new Map<string, number>();
  /** Boots and destroys under way, awaited by `drain`. */
  readonly #pending = new Set<Promise<void>>();
  readonly #closing = new AbortController();
  #draining: Promise<void> | undefined;
  #reconciling: Promise<void> | undefined;
  #reconcileAgain = false;
  #timer: NodeJS.Timeout | undefined;
  #nextCheck = 0;
  /** Failed boots in a row, and until when no boot starts because of them. */
  #failedBoots = 0;
  #bootsResumeAt = 0;
  #hits = 0;
  #misses = 0;
  readonly shape: NonNullable<Backend['shape']>;
  readonly listManaged?: NonNullable<Backend['listManaged']>;
  readonly destroyManaged?: NonNullable<Backend['destroyManaged']>;

  constructor(options: WarmPoolOptions) {
    this.#options = options;
    this.#backend = options.backend;
    this.#demand = new Demand(options.mode, options.windowMs);
    this.shape = options.backend.shape.bind(options.backend);
    // Boots wait while the breaker is not closed; once it closes, the pool fills again at once.
    options.breaker.on('close', () => this.#kick());
    if (options.backend.listManaged) this.listManaged = options.backend.listManaged.bind(options.backend);
    if (options.backend.destroyManaged) this.destroyManaged = options.backend.destroyManaged.bind(options.backend);
  }

  /** Start filling: in fixed mode at once, with the defaults' shape; in adaptive mode as jobs come. Never rejects. */
  async fill(): Promise<void> {
    const { defaults } = this.#options;
    if (this.#options.mode === 'fixed' && defaults !== undefined) {
      try {
        const shape = await this.#backend.shape(defaults, this.#closing.signal);
        this.#demand.record(shape.key, defaults, Date.now());
      } catch (err) {
        if (this.#closing.signal.aborted) return;
        this.#options.logger.warn({ err: errorMessage(err) }, 'warm pool: cannot tell the shape of a job with the default settings; filling as jobs come');
      }
    }
    this.#kick();
  }

  async start(attributes: StartAttributes, options: StartOptions): Promise<Instance> {
    if (this.#closing.signal.aborted) return this.#backend.start(attributes, options);
    const began = Date.now();
    let shape: MachineShape;
    try {
      shape = await this.#backend.shape(attributes, options.signal);
    } catch (err) {
      if (options.signal.aborted) throw err;
      // `start` resolves the same way and says, in the job's terms, what is wrong.
      return this.#backend.start(attributes, options);
    }
    this.#demand.record(shape.key, attributes, began);
    let taken = this.#take(shape.key, began + attributes.hardTimeoutMs);
    while (taken !== undefined && !(await this.#stillAnswers(taken, options))) taken = this.#take(shape.key, began + attributes.hardTimeoutMs);
    if (taken !== undefined) {
      this.#hits += 1;
      const idleMs = Date.now() - taken.readyAt;
      this.#options.metrics.hit(shape.key);
      this.#options.metrics.left('used', idleMs);
      options.progress(`Using warm instance ${taken.instance.id} (idle for ${(idleMs / 1000).toFixed(1)}s)`);
      options.logger.info({ instance: taken.instance.id, shape: shape.key, idle_ms: idleMs }, 'warm pool hit');
      this.#kick();
      return new WarmInstance(taken.instance, Date.now() - began);
    }
    this.#misses += 1;
    this.#options.metrics.miss(shape.key);
    options.logger.debug({ shape: shape.key }, 'warm pool miss');
    try {
      return await this.#startCold(attributes, options);
    } finally {
      this.#kick();
    }
  }

  /** Destroy the pool, then close the backend. */
  async close(): Promise<void> {
    await this.drain();
    await this.#backend.close();
  }

  /** Stop booting and destroy every idle instance (draining, stopping). Idempotent; jobs still get cold starts. */
  drain(): Promise<void> {
    this.#draining ??= (async () => {
      this.#closing.abort(new Error('the warm pool is closing'));
      clearTimeout(this.#timer);
      await this.#reconciling;
      for (const idle of [...this.#idle]) this.#evict(idle, 'drain');
      while (this.#pending.size > 0) await Promise.allSettled([...this.#pending]);
      this.#options.logger.info('warm pool drained');
    })();
    return this.#draining;
  }

  status(): WarmPoolStatus {
    const now = Date.now();
    const targets = this.#closing.signal.aborted ? new Map() : this.#demand.targets(this.#options.size, now);
    const keys = new Set<string>([...targets.keys(), ...this.#booting.keys(), ...this.#idle.map((idle) => idle.shape)]);
    return {
      mode: this.#options.mode,
      size: this.#options.size,
      hits: this.#hits,
      misses: this.#misses,
      shapes: [...keys].sort().map((shape) => ({
        shape,
        target: targets.get(shape)?.count ?? 0,
        booting: this.#booting.get(shape) ?? 0,
        idle: this.#idle
          .filter((idle) => idle.shape === shape)
          .map((idle) => ({
            id: idle.instance.id,
            image: idle.image,
            ageSeconds: Math.floor((now - idle.bootedAt) / 1000),
            idleSeconds: Math.floor((now - idle.readyAt) / 1000),
          })),
      })),
    };
  }

  /** Idle and booting instances per shape, for the gauges. */
  counts(): Map<string, { idle: number; booting: number }> {
    const counts = new Map<string, { idle: number; booting: number }>();
    for (const idle of this.#idle) {
      const entry = counts.get(idle.shape) ?? { idle: 0, booting: 0 };
      entry.idle += 1;
      counts.set(idle.shape, entry);
    }
    for (const [shape, booting] of this.#booting) counts.set(shape, { idle: counts.get(shape)?.idle ?? 0, booting });
    return counts;
  }

  /** The oldest idle instance of `shape` whose lease lasts until `until`, taken out of the pool. */
  #take(shape: string, until: number): Idle | undefined {
    let best: Idle | undefined;
    for (const idle of this.#idle) {
      if (idle.shape !== shape || idle.leaseUntil < until) continue;
      if (best === undefined || idle.readyAt < best.readyAt) best = idle;
    }
    if (best !== undefined) this.#idle.splice(this.#idle.indexOf(best), 1);
    return best;
  }

  /** Probe `idle`, taken for a job, once more; one that does not answer is evicted. Rethrows the job's abort (`idle` goes back). */
  async #stillAnswers(idle: Idle, options: StartOptions): Promise<boolean> {
    const { probe } = idle.instance;
    if (probe === undefined) return true;
    try {
      await probe.call(idle.instance, AbortSignal.any([options.signal, AbortSignal.timeout(HIT_CHECK_TIMEOUT_MS)]));
      return true;
    } catch (err) {
      if (options.signal.aborted) {
        this.#idle.push(idle);
        throw options.signal.reason;
      }
      options.logger.warn({ instance: idle.instance.id, err: errorMessage(err) }, 'warm instance no longer answers; destroying it');
      void this.#evict(idle, 'dead');
      return false;
    }
  }

  /**
   * A job's own start. When the backend has no room (docker's cores, a
   * quota) while the pool holds idle machines, the oldest of them gives way
   * and the start is tried once more: the pool never keeps a job from a
   * machine it could have had.
   */
  async #startCold(attributes: StartAttributes, options: StartOptions): Promise<Instance> {
    try {
      return await this.#backend.start(attributes, options);
    } catch (err) {
      const oldest = this.#idle.reduce<Idle | undefined>((a, b) => (a === undefined || b.bootedAt < a.bootedAt ? b : a), undefined);
      if (!(err instanceof NoCapacityError) || oldest === undefined) throw err;
      options.logger.info({ instance: oldest.instance.id, err: errorMessage(err) }, 'no room for the job: a warm instance gives way');
      await this.#evict(oldest, 'capacity');
      return await this.#backend.start(attributes, options);
    }
  }

  /** Reconcile soon; one pass at a time, and one more if asked during a pass. */
  #kick(): void {
    if (this.#closing.signal.aborted) return;
    if (this.#reconciling !== undefined) {
      this.#reconcileAgain = true;
      return;
    }
    this.#reconciling = (async () => {
      do {
        this.#reconcileAgain = false;
        try {
          await this.#reconcile();
        } catch (err) {
          if (!this.#closing.signal.aborted) this.#options.logger.warn({ err: errorMessage(err) }, 'warm pool: a pass failed; trying again later');
        }
      } while (this.#reconcileAgain && !this.#closing.signal.aborted);
      this.#reconciling = undefined;
      this.events.emit('reconciled');
    })();
  }

  /** Replace what is stale, drop what is not wanted, boot what is missing, and set the timer for the next pass. */
  async #reconcile(): Promise<void> {
    const { size, maxAgeMs, breaker } = this.#options;
    let now = Date.now();
    for (const idle of [...this.#idle]) if (now - idle.bootedAt >= maxAgeMs) void this.#evict(idle, 'age');
    if (now >= this.#nextCheck) {
      this.#nextCheck = now + (this.#options.checkIntervalMs ?? FRESHNESS_CHECK_MS);
      await this.#checkImages();
      now = Date.now();
    }
    if (this.#closing.signal.aborted) return;
    const targets = this.#demand.targets(size, now);
    for (const shape of new Set(this.#idle.map((idle) => idle.shape))) {
      const extra = this.#idleOf(shape).length - (targets.get(shape)?.count ?? 0);
      const oldestFirst = this.#idleOf(shape).sort((a, b) => a.bootedAt - b.bootedAt);
      for (const idle of oldestFirst.slice(0, Math.max(0, extra))) void this.#evict(idle, 'surplus');
    }
    if (breaker.state === 'closed' && now >= this.#bootsResumeAt) {
      let room = size - this.#idle.length - [...this.#booting.values()].reduce((a, b) => a + b, 0);
      for (const [shape, target] of targets) {
        let missing = target.count - this.#idleOf(shape).length - (this.#booting.get(shape) ?? 0);
        while (missing-- > 0 && room-- > 0) this.#boot(shape, target.template);
      }
    }
    this.#schedule(now);
  }

  /** Wake for the next age limit, freshness check or (adaptive) demand step. */
  #schedule(now: number): void {
    const { maxAgeMs, mode, windowMs } = this.#options;
    let next = this.#nextCheck;
    for (const idle of this.#idle) next = Math.min(next, idle.bootedAt + maxAgeMs);
    if (mode === 'adaptive') next = Math.min(next, now + windowMs / DECAY_STEPS_PER_WINDOW);
    if (this.#bootsResumeAt > now) next = Math.min(next, this.#bootsResumeAt);
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => this.#kick(), Math.max(0, next - now));
    // The pool alone never keeps the process alive.
    this.#timer.unref();
  }

  /**
   * Resolve each wanted shape again: one whose image changed (the backend
   * would now boot another) moves its demand to the new shape, and its idle
   * instances are replaced.
   */
  async #checkImages(): Promise<void> {
    const stale = new Set<string>();
    for (const [shape, template] of this.#demand.shapes()) {
      let now: MachineShape;
      try {
        now = await this.#backend.shape(template, this.#closing.signal);
      } catch (err) {
        if (this.#closing.signal.aborted) return;
        this.#options.logger.warn({ shape, err: errorMessage(err) }, 'warm pool: cannot resolve a shape again; keeping its instances');
        continue;
      }
      if (now.key === shape) continue;
      this.#options.logger.info({ shape, now: now.key }, 'warm pool: a shape now resolves to another image; replacing its instances');
      this.#demand.rename(shape, now.key);
      stale.add(shape);
    }
    for (const idle of [...this.#idle]) if (stale.has(idle.shape)) void this.#evict(idle, 'image');
  }

  #idleOf(shape: string): Idle[] {
    return this.#idle.filter((idle) => idle.shape === shape);
  }

  /** Boot one instance of `shape` from `template` in the background, probe it, and add it to the pool. */
  #boot(shape: string, template: StartAttributes): void {
    const options = this.#options;
    this.#booting.set(shape, (this.#booting.get(shape) ?? 0) + 1);
    // A sum of two settings, each bounded alone: timeoutSignal keeps it within what a timer can hold.
    const timeout = timeoutSignal(options.bootTimeoutMs);
    const signal = AbortSignal.any([this.#closing.signal, timeout]);
    const attributes: StartAttributes = {
      ...template,
      jobId: WARM_JOB_ID,
      repository: `${WARM_OWNER}/${randomBytes(4).toString('hex')}`,
      hardTimeoutMs: options.maxAgeMs + options.hardTimeoutMs,
    };
    const logger = options.logger.child({ warm_shape: shape });
    const bootedAt = Date.now();
    const booting = (async () => {
      let instance: Instance | undefined;
      let booked = true;
      /** No longer booting: counted as idle from now on, or gone. */
      const unbook = (): void => {
        if (!booked) return;
        booked = false;
        const left = (this.#booting.get(shape) ?? 1) - 1;
        if (left > 0) this.#booting.set(shape, left);
        else this.#booting.delete(shape);
      };
      try {
        instance = await this.#backend.start(attributes, { signal, progress: () => {}, logger, recordPhase: options.recordPhase });
        await instance.probe?.(signal);
        options.breaker.recordSuccess();
        this.#failedBoots = 0;
        if (this.#closing.signal.aborted) throw this.#closing.signal.reason;
        unbook();
        this.#idle.push({ instance, shape, image: instance.imageName, bootedAt, readyAt: Date.now(), leaseUntil: bootedAt + attributes.hardTimeoutMs });
        logger.info({ instance: instance.id, boot_ms: Date.now() - bootedAt }, 'warm instance ready');
        this.events.emit('ready', instance.id, shape);
      } catch (err) {
        const made = instance;
        if (made !== undefined) await this.#destroy(made, logger);
        if (this.#closing.signal.aborted) return;
        const stage = made === undefined ? 'start' : 'probe';
        options.metrics.bootFailed(stage);
        this.#failedBoots += 1;
        const retryMs = Math.min(MAX_BOOT_RETRY_MS, (options.bootRetryMs ?? BOOT_RETRY_MS) * 2 ** Math.min(this.#failedBoots - 1, 20));
        this.#bootsResumeAt = Date.now() + retryMs;
        // No room is the pool competing with jobs for the backend's capacity, not a backend that fails: jobs come first.
        const code = timeout.aborted ? 'E_STARTUP_TIMEOUT' : isMayflyError(err) ? err.code : undefined;
        if (code !== undefined && code !== 'E_NO_CAPACITY' && isStartFailureCode(code)) options.breaker.recordFailure(code);
        logger.warn(
          { instance: made?.id, err: errorMessage(err), retry_ms: retryMs },
          made === undefined ? 'warm pool: a boot failed' : 'warm pool: an instance failed its readiness probe; destroyed it',
        );
        this.events.emit('boot-failed', stage, err);
      } finally {
        unbook();
        this.#kick();
      }
    })();
    this.#track(booting);
  }

  /** Take `idle` out of the pool and destroy it. */
  #evict(idle: Idle, reason: EvictReason): Promise<void> {
    const index = this.#idle.indexOf(idle);
    if (index >= 0) this.#idle.splice(index, 1);
    this.#options.metrics.left(reason, Date.now() - idle.readyAt);
    this.#options.logger.info({ instance: idle.instance.id, shape: idle.shape, reason }, 'warm instance evicted');
    this.events.emit('evicted', idle.instance.id, reason);
    return this.#track(this.#destroy(idle.instance, this.#options.logger));
  }

  /** Destroy `instance`; a failure is logged (its lease lets the reaper finish the job). */
  async #destroy(instance: Instance, logger: Logger): Promise<void> {
    try {
      await raceAbort(instance.destroy(), AbortSignal.timeout(DESTROY_TIMEOUT_MS));
    } catch (err) {
      logger.error({ instance: instance.id, err: errorMessage(err) }, 'warm pool: could not destroy an instance; the reaper takes it once its lease expires');
    }
  }

  #track(work: Promise<void>): Promise<void> {
    this.#pending.add(work);
    void work.finally(() => this.#pending.delete(work));
    return work;
  }
}

/** A warm instance handed to a job: its start took as long as taking it from the pool. */
class WarmInstance extends DelegatingInstance {
  constructor(
    inner: Instance,
    private readonly takenMs: number,
  ) {
    super(inner);
  }

  override get startupMs(): number {
    return this.takenMs;
  }
}
