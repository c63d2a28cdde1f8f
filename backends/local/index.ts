/**
 * `local`: runs each job's script as a child process of the worker, in a
 * fresh directory of its own. The embedded default, for development and
 * for trying mayfly out; it isolates nothing (the script runs as the
 * worker's user), so never point it at untrusted jobs. It does keep each
 * job's processes together and ends all of them with the job (containment.ts).
 */
import { mkdir, mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InstanceStartError, type Backend, type BackendContext, type BackendDefinition, type Instance, type StartAttributes, type StartOptions } from '../../src/backend/kit.js';
import { CONTAINMENT_KINDS, chooseContainment, type Containment, type ContainmentSetting } from './containment.js';
import { LocalInstance } from './instance.js';

export interface LocalSettings {
  scriptsDir: string;
  containment: ContainmentSetting;
}

class LocalBackend implements Backend {
  private containment: Promise<Containment | undefined> | undefined;

  constructor(
    private readonly settings: LocalSettings,
    private readonly context: BackendContext,
  ) {}

  async start(attributes: StartAttributes, { signal }: StartOptions): Promise<Instance> {
    signal.throwIfAborted();
    const started = Date.now();
    const containment = await this.chosenContainment();
    await mkdir(this.settings.scriptsDir, { recursive: true });
    const dir = await mkdtemp(join(this.settings.scriptsDir, `job-${attributes.jobId}-`));
    return new LocalInstance(dir, await containment.create(dir), Date.now() - started);
  }

  /** Probed once, at the first job: the mechanism depends on the host, not on the job. */
  private async chosenContainment(): Promise<Containment> {
    this.containment ??= chooseContainment(this.settings.containment).then((containment) => {
      const { logger } = this.context;
      if (containment?.kind === 'session') logger.warn({ containment: 'session' }, 'local jobs are contained by session only: a daemon a job starts may outlive it');
      else if (containment) logger.info({ containment: containment.kind }, 'local jobs are contained');
      return containment;
    });
    const containment = await this.containment;
    if (!containment) throw new InstanceStartError(`TRAVIS_WORKER_LOCAL_CONTAINMENT: ${this.settings.containment} is not available on this host`);
    return containment;
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
    containment: {
      doc: "how a job's processes are kept together and ended with it: auto (the first of cgroup, pid-namespace, session that works here), cgroup (a cgroup v2 per job: root or systemd Delegate=yes), pid-namespace (unshare), session (fallback: misses double-forked daemons)",
      format: [...CONTAINMENT_KINDS],
      default: 'auto',
    },
  },
  create: (settings, context) => new LocalBackend(settings, context),
};
