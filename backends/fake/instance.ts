import {
  ConnectionLostError,
  StaleVmError,
  UploadError,
  abortableSleep,
  type Instance,
  type RunOptions,
  type RunResult,
} from '../../src/backend/kit.js';
import type { FakeSettings } from './index.js';

/** Resolve when `output` can take more, or reject when the run is stopped. */
function writeRespectingBackpressure(output: NodeJS.WritableStream, chunk: string, signal: AbortSignal): Promise<void> {
  if (output.write(chunk)) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const onAbort = (): void => {
      output.removeListener('drain', onDrain);
      reject(signal.reason);
    };
    const onDrain = (): void => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    };
    output.once('drain', onDrain);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

export class FakeInstance implements Instance {
  readonly imageName = 'fake';
  readonly startupMs: number;
  private uploaded = false;
  destroyed = false;

  constructor(
    readonly id: string,
    private readonly settings: FakeSettings,
  ) {
    this.startupMs = settings.startupDuration;
  }

  async upload(): Promise<void> {
    if (this.settings.failUpload) throw new UploadError('the fake backend is set to fail every upload (TRAVIS_WORKER_FAKE_FAIL_UPLOAD)');
    if (this.uploaded) throw new StaleVmError(`${this.id} already has a script`);
    this.uploaded = true;
  }

  async run({ output, signal }: RunOptions): Promise<RunResult> {
    if (this.settings.error) throw new ConnectionLostError('the fake backend is set to lose every run (TRAVIS_WORKER_FAKE_ERROR)');
    try {
      for (let i = 0; i < this.settings.logRepeat && !signal.aborted; i++) {
        await writeRespectingBackpressure(output, this.settings.logOutput, signal);
      }
      await abortableSleep(this.settings.runSleep, signal);
    } catch {
      return { exitCode: null, signal: 'KILL' };
    }
    return { exitCode: this.settings.exitCode };
  }

  async destroy(): Promise<void> {
    this.destroyed = true;
  }
}
