/**
 * Cleanups registered as things are started, run last-in first-out: what
 * was started last (the pool) stops first, what everything else needs (the
 * queue, the backend) closes after. A cleanup that fails is logged and the
 * rest still run.
 */
import { errorMessage } from './errors.js';
import type { Logger } from './logger.js';

interface Releaser {
  name: string;
  release: () => Promise<void>;
}

export class Releasers {
  private readonly stack: Releaser[] = [];

  constructor(private readonly logger: Logger) {}

  /** Run `release` before everything added so far. `name` completes "releasing ... failed". */
  add(name: string, release: () => Promise<void>): void {
    this.stack.push({ name, release });
  }

  /** Run `release` after everything else, even what is added later (a listener that must answer until the end). */
  addFinal(name: string, release: () => Promise<void>): void {
    this.stack.unshift({ name, release });
  }

  /** Run every cleanup, newest first; each runs once. */
  async releaseAll(): Promise<void> {
    for (const { name, release } of this.stack.splice(0).reverse()) {
      await release().catch((err: unknown) => this.logger.warn({ err: errorMessage(err) }, `releasing ${name} failed`));
    }
  }
}
