/**
 * Which instances this worker process is using right now, and which jobs
 * are still starting one: what the reaper must never take, whatever its
 * labels say. Kept by wrapping the backend the jobs use, so it is exact
 * (an instance is held from the moment `start` returns it until its
 * `destroy` settles) and needs nothing from the job pipeline.
 */
import type { Backend, Instance, StartAttributes, StartOptions } from '../backend/contract.js';
import { DelegatingInstance } from '../backend/delegating-instance.js';

export class HeldInstances {
  /** Job id -> starts in flight for it. */
  readonly #starting = new Map<number, number>();
  /** Instance id -> the job holding it. */
  readonly #held = new Map<string, number>();

  /** True while a job of this process holds the instance `id`. */
  holds(id: string): boolean {
    return this.#held.has(id);
  }

  /** True while a start for job `jobId` is in flight here (its instance may exist, unknown to us yet). */
  starting(jobId: number): boolean {
    return (this.#starting.get(jobId) ?? 0) > 0;
  }

  /** Instances held now, for logs and tests. */
  get size(): number {
    return this.#held.size;
  }

  /** `backend`, with every start and destroy recorded here. The optional methods (shape, the reaper's) pass through. */
  wrap(backend: Backend): Backend {
    const wrapped: Backend = {
      start: (attributes, options) => this.#start(backend, attributes, options),
      close: () => backend.close(),
    };
    if (backend.shape) wrapped.shape = (attributes, signal) => (backend.shape as NonNullable<Backend['shape']>).call(backend, attributes, signal);
    if (backend.listManaged) wrapped.listManaged = (signal) => (backend.listManaged as NonNullable<Backend['listManaged']>).call(backend, signal);
    if (backend.destroyManaged) {
      wrapped.destroyManaged = (id, signal) => (backend.destroyManaged as NonNullable<Backend['destroyManaged']>).call(backend, id, signal);
    }
    return wrapped;
  }

  async #start(backend: Backend, attributes: StartAttributes, options: StartOptions): Promise<Instance> {
    const { jobId } = attributes;
    this.#starting.set(jobId, (this.#starting.get(jobId) ?? 0) + 1);
    try {
      const instance = await backend.start(attributes, options);
      this.#held.set(instance.id, jobId);
      return new HeldInstance(instance, () => this.#held.delete(instance.id));
    } finally {
      const left = (this.#starting.get(jobId) ?? 1) - 1;
      if (left > 0) this.#starting.set(jobId, left);
      else this.#starting.delete(jobId);
    }
  }
}

/** An instance that lets go of its hold once its destroy has settled (a failed destroy leaves it to the reaper). */
class HeldInstance extends DelegatingInstance {
  constructor(
    inner: Instance,
    private readonly release: () => void,
  ) {
    super(inner);
  }

  override async destroy(): Promise<void> {
    try {
      await super.destroy();
    } finally {
      this.release();
    }
  }
}
