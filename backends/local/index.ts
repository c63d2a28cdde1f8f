/**
 * `local`: runs each job's script as a child process of the worker, in a
 * fresh directory of its own. The embedded default, for development and
 * for trying mayfly out; it isolates nothing (the script runs as the
 * worker's user), so never point it at untrusted jobs.
 */
import { mkdir, mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Backend, BackendDefinition, Instance, StartAttributes, StartOptions } from '../../src/backend/kit.js';
import { LocalInstance } from './instance.js';

export interface LocalSettings {
  scriptsDir: string;
}

class LocalBackend implements Backend {
  constructor(private readonly settings: LocalSettings) {}

  async start(attributes: StartAttributes, { signal }: StartOptions): Promise<Instance> {
    signal.throwIfAborted();
    const started = Date.now();
    await mkdir(this.settings.scriptsDir, { recursive: true });
    const dir = await mkdtemp(join(this.settings.scriptsDir, `job-${attributes.jobId}-`));
    return new LocalInstance(dir, Date.now() - started);
  }

  async close(): Promise<void> {}
}

export const definition: BackendDefinition<LocalSettings> = {
  name: 'local',
  description: 'runs each job as a child process in a directory of its own on the worker host (development only)',
  settings: {
    scriptsDir: {
      doc: 'where each job gets its working directory (removed after the job)',
      format: String,
      default: join(tmpdir(), 'mayfly-local'),
    },
  },
  create: (settings) => new LocalBackend(settings),
};
