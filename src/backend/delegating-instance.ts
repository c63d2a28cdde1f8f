/**
 * An instance that passes every call on to another: what a layer around a
 * backend (the record of held instances, the warm pool) builds on to
 * change one thing about the instances it hands out.
 */
import type { Instance, RunOptions, RunResult, UploadOptions } from './contract.js';

export class DelegatingInstance implements Instance {
  readonly probe?: (signal: AbortSignal) => Promise<void>;

  constructor(protected readonly inner: Instance) {
    if (inner.probe) this.probe = (signal) => (inner.probe as NonNullable<Instance['probe']>).call(inner, signal);
  }

  get id(): string {
    return this.inner.id;
  }

  get imageName(): string {
    return this.inner.imageName;
  }

  get startupMs(): number {
    return this.inner.startupMs;
  }

  get vmSize(): string | undefined {
    return this.inner.vmSize;
  }

  upload(script: Buffer, options: UploadOptions): Promise<void> {
    return this.inner.upload(script, options);
  }

  run(options: RunOptions): Promise<RunResult> {
    return this.inner.run(options);
  }

  destroy(): Promise<void> {
    return this.inner.destroy();
  }
}
