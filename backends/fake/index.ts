/**
 * `fake`: instances that exist only in memory and "run" a script by writing
 * configured output, for tests and benchmarks. Each failure travis' fake
 * could only approximate (`ERROR`) can be switched on by itself.
 */
import {
  InstanceStartError,
  abortableSleep,
  type Backend,
  type BackendDefinition,
  type Instance,
  type MachineShape,
  type StartAttributes,
  type StartOptions,
} from '../../src/backend/kit.js';
import { FakeInstance } from './instance.js';

export interface FakeSettings {
  logOutput: string;
  logRepeat: number;
  runSleep: number;
  startupDuration: number;
  exitCode: number;
  error: boolean;
  failStart: boolean;
  failStartCount: number;
  failUpload: boolean;
}

class FakeBackend implements Backend {
  private started = 0;
  /** Calls to start, failed ones included. */
  private attempts = 0;

  constructor(private readonly settings: FakeSettings) {}

  async start(attributes: { jobId: number }, { signal }: StartOptions): Promise<Instance> {
    await abortableSleep(this.settings.startupDuration, signal);
    if (this.settings.failStart) throw new InstanceStartError('the fake backend is set to fail every start (TRAVIS_WORKER_FAKE_FAIL_START)');
    this.attempts++;
    if (this.attempts <= this.settings.failStartCount) {
      throw new InstanceStartError(`the fake backend is set to fail its first ${this.settings.failStartCount} starts (TRAVIS_WORKER_FAKE_FAIL_START_COUNT); this was start ${this.attempts}`);
    }
    this.started++;
    return new FakeInstance(`fake-${attributes.jobId}-${this.started}`, this.settings);
  }

  /** Fake machines differ by what a job could ask of a real one: its image and its size. */
  async shape(attributes: StartAttributes): Promise<MachineShape> {
    const image = attributes.imageName ?? 'fake';
    return { key: `image=${image} vm_size=${attributes.vmSize ?? 'default'}`, image };
  }

  async close(): Promise<void> {}
}

export const definition: BackendDefinition<FakeSettings> = {
  name: 'fake',
  description: 'pretends to run jobs, writing configured output (tests and benchmarks)',
  settings: {
    logOutput: { doc: 'what every job prints', format: String, default: 'Hello from the fake backend\n' },
    logRepeat: { doc: 'how many times the output is printed', format: 'nat', default: 1 },
    runSleep: { doc: 'how long each job runs after printing (Go duration)', format: 'duration', default: 0 },
    startupDuration: { doc: 'how long an instance takes to start (Go duration)', format: 'duration', default: 0 },
    exitCode: { doc: 'the exit status every job ends with', format: 'int', default: 0 },
    error: { doc: 'every run loses its connection, so every job is requeued (requeue storms)', format: Boolean, default: false },
    failStart: { doc: 'every instance fails to start', format: Boolean, default: false },
    failStartCount: { doc: 'the first this many instances fail to start, the ones after start (a backend outage that ends)', format: 'nat', default: 0 },
    failUpload: { doc: 'every script upload fails', format: Boolean, default: false },
  },
  create: (settings) => new FakeBackend(settings),
};
