/**
 * The Engine API operations the backend uses, typed: containers, exec,
 * archive, images. Each validates what it reads and turns "not there" (404)
 * into a value where the caller treats it as an outcome rather than a failure.
 *
 * Over the usual size: one typed function per Engine API operation, each
 * small; split by resource they would share the same schemas.
 */
import type { Readable } from 'node:stream';
import { z } from 'zod';
import { DockerApi, DockerApiError } from './api.js';
import { isValidImageName } from './images.js';

const idSchema = z.object({ Id: z.string().min(1) });

const containerSchema = z.object({
  Id: z.string().min(1),
  Name: z.string(),
  State: z.object({
    Status: z.string(),
    Running: z.boolean(),
    ExitCode: z.number().int(),
    Error: z.string().optional(),
  }),
  NetworkSettings: z
    .object({
      IPAddress: z.string().optional(),
      Networks: z.record(z.string(), z.object({ IPAddress: z.string().optional() }).nullable()).nullish(),
    })
    .nullish(),
});
export type ContainerInfo = z.infer<typeof containerSchema>;

const imageSummarySchema = z.array(z.object({ Id: z.string(), RepoTags: z.array(z.string()).nullish() }));
export type ImageSummary = z.infer<typeof imageSummarySchema>[number];
const imageSchema = z.object({ Id: z.string(), RepoTags: z.array(z.string()).nullish() });

const execSchema = z.object({ Running: z.boolean(), ExitCode: z.number().int().nullable() });
export type ExecInfo = z.infer<typeof execSchema>;

const waitSchema = z.object({ StatusCode: z.number().int() });

const containerListSchema = z.array(
  z.object({
    Id: z.string(),
    Names: z.array(z.string()).nullish(),
    State: z.string().optional(),
    Labels: z.record(z.string(), z.string()).nullish(),
    /** Seconds since the epoch. */
    Created: z.number().optional(),
  }),
);
export type ContainerSummary = z.infer<typeof containerListSchema>[number];

/** One line of a pull's progress stream. */
const pullLineSchema = z.object({
  status: z.string().optional(),
  id: z.string().optional(),
  error: z.string().optional(),
  errorDetail: z.object({ message: z.string().optional() }).optional(),
});

/** The parts of `POST /containers/create` this backend sets. */
export interface ContainerSpec {
  Image: string;
  Cmd: string[];
  Hostname: string;
  Domainname: string;
  Labels: Record<string, string>;
  HostConfig: {
    Binds: string[];
    Privileged: boolean;
    Tmpfs: Record<string, string>;
    SecurityOpt?: string[];
    ShmSize?: number;
    Memory?: number;
    CpusetCpus?: string;
    NetworkMode?: string;
  };
}

export interface ExecSpec {
  Cmd: string[];
  User: string;
  Tty: boolean;
  Env?: string[];
}

export class DockerEngine {
  constructor(readonly api: DockerApi) {}

  async listImages(signal: AbortSignal): Promise<ImageSummary[]> {
    return this.api.json('images.list', imageSummarySchema, { method: 'GET', path: '/images/json', signal });
  }

  /** The image's id, or undefined when the engine does not have it. */
  async imageId(name: string, signal: AbortSignal): Promise<string | undefined> {
    // The name goes into the path as it is (docker routes `a/b:c` that way): only a valid reference may.
    if (!isValidImageName(name)) throw new DockerApiError('images.inspect', 0, `not an image name: ${JSON.stringify(name)}`);
    const answer = await this.api.call('images.inspect', {
      method: 'GET',
      path: `/images/${name}/json`,
      signal,
      accept: [404],
    });
    if (answer.status === 404) {
      await answer.body.dump();
      return undefined;
    }
    return imageSchema.parse(JSON.parse(await answer.body.text())).Id;
  }

  /**
   * Pull `name` (`repo[:tag]`), reporting each layer's status change through
   * `progress`. The engine answers 200 and reports failures in the stream,
   * so each line is checked for `error`.
   */
  async pullImage(name: string, progress: (line: string) => void, signal: AbortSignal): Promise<void> {
    const [repository, tag] = splitImageName(name);
    const answer = await this.api.call('images.pull', {
      method: 'POST',
      path: '/images/create',
      query: { fromImage: repository, tag },
      signal,
      longLived: true,
    });
    await readPullStream(answer.body, name, progress);
  }

  /** The container, or undefined when there is none of that id or name. */
  async inspectContainer(idOrName: string, signal: AbortSignal): Promise<ContainerInfo | undefined> {
    const answer = await this.api.call('containers.inspect', {
      method: 'GET',
      path: `/containers/${encodeURIComponent(idOrName)}/json`,
      signal,
      accept: [404],
    });
    if (answer.status === 404) {
      await answer.body.dump();
      return undefined;
    }
    const parsed = containerSchema.safeParse(JSON.parse(await answer.body.text()));
    if (!parsed.success) throw new DockerApiError('containers.inspect', 200, `unexpected answer: ${z.prettifyError(parsed.error)}`);
    return parsed.data;
  }

  async createContainer(name: string, spec: ContainerSpec, signal: AbortSignal): Promise<string> {
    const { Id } = await this.api.json('containers.create', idSchema, {
      method: 'POST',
      path: '/containers/create',
      query: { name },
      body: spec,
      signal,
    });
    return Id;
  }

  async startContainer(id: string, signal: AbortSignal): Promise<void> {
    await this.api.empty('containers.start', { method: 'POST', path: `/containers/${id}/start`, signal });
  }

  /** Stop with `graceSeconds` between SIGTERM and SIGKILL. False when the container is gone already. */
  async stopContainer(id: string, graceSeconds: number, signal: AbortSignal): Promise<boolean> {
    const status = await this.api.empty('containers.stop', {
      method: 'POST',
      path: `/containers/${id}/stop`,
      query: { t: graceSeconds },
      signal,
      // The engine answers once the container is down, up to the grace period later
      // (TRAVIS_WORKER_DOCKER_STOP_TIMEOUT, which may pass the timeout of short calls):
      // the caller's signal (the destroy deadline) bounds the wait instead.
      longLived: true,
      // 304: it was not running.
      accept: [304, 404],
    });
    return status !== 404;
  }

  /** Remove (forcibly, with its anonymous volumes). False when it was gone already. */
  async removeContainer(idOrName: string, signal: AbortSignal): Promise<boolean> {
    const status = await this.api.empty('containers.remove', {
      method: 'DELETE',
      path: `/containers/${encodeURIComponent(idOrName)}`,
      query: { force: true, v: true },
      signal,
      accept: [404],
    });
    return status !== 404;
  }

  async killContainer(id: string, signal: AbortSignal): Promise<void> {
    await this.api.empty('containers.kill', { method: 'POST', path: `/containers/${id}/kill`, signal });
  }

  /** Containers (running or not) carrying every one of `labels` (`key=value` or `key`). */
  async listContainers(labels: readonly string[], signal: AbortSignal): Promise<ContainerSummary[]> {
    return this.api.json('containers.list', containerListSchema, {
      method: 'GET',
      path: '/containers/json',
      query: { all: true, filters: JSON.stringify({ label: labels }) },
      signal,
    });
  }

  /**
   * Resolves with the container's exit status once it stops (now, if it is
   * not running). A long-lived request: the engine answers when it happens.
   */
  async waitContainer(id: string, signal: AbortSignal): Promise<number> {
    const { StatusCode } = await this.api.json('containers.wait', waitSchema, {
      method: 'POST',
      path: `/containers/${id}/wait`,
      signal,
      longLived: true,
    });
    return StatusCode;
  }

  /** Extract a tar archive into the container at `path` (a directory). */
  async putArchive(id: string, path: string, tar: Buffer, signal: AbortSignal): Promise<void> {
    await this.api.empty('containers.archive.put', {
      method: 'PUT',
      path: `/containers/${id}/archive`,
      query: { path },
      body: tar,
      signal,
    });
  }

  /** Whether `path` exists in the container (`HEAD /containers/{id}/archive`). */
  async pathExists(id: string, path: string, signal: AbortSignal): Promise<boolean> {
    const status = await this.api.empty('containers.archive.stat', {
      method: 'HEAD',
      path: `/containers/${id}/archive`,
      query: { path },
      signal,
      accept: [404],
    });
    return status !== 404;
  }

  async createExec(containerId: string, spec: ExecSpec, signal: AbortSignal): Promise<string> {
    const { Id } = await this.api.json('exec.create', idSchema, {
      method: 'POST',
      path: `/containers/${containerId}/exec`,
      body: { ...spec, AttachStdin: false, AttachStdout: true, AttachStderr: true },
      signal,
    });
    return Id;
  }

  /**
   * Start an exec attached: the answer's body is its output, raw with a
   * terminal, multiplexed (8-byte frame headers) without, until it exits.
   */
  async startExec(execId: string, tty: boolean, signal: AbortSignal): Promise<Readable> {
    return this.api.upgrade('exec.start', {
      method: 'POST',
      path: `/exec/${execId}/start`,
      body: { Detach: false, Tty: tty },
      signal,
    });
  }

  async inspectExec(execId: string, signal: AbortSignal): Promise<ExecInfo> {
    return this.api.json('exec.inspect', execSchema, { method: 'GET', path: `/exec/${execId}/json`, signal });
  }
}

/** `repo[:tag]` (a registry port is not a tag; a digest is kept whole); the tag defaults to `latest`. */
export function splitImageName(name: string): [string, string] {
  if (name.includes('@')) return [name, ''];
  const slash = name.lastIndexOf('/');
  const colon = name.lastIndexOf(':');
  return colon > slash ? [name.slice(0, colon), name.slice(colon + 1)] : [name, 'latest'];
}

/**
 * Read a pull's JSON-lines progress: each new status of a layer becomes a
 * line for `progress` (the byte counters in between are dropped: they would
 * flood the job log); an `error` line fails the pull with the engine's text.
 */
export async function readPullStream(body: AsyncIterable<Buffer | string>, name: string, progress: (line: string) => void): Promise<void> {
  let pending = '';
  const lastStatus = new Map<string, string>();
  const handle = (text: string): void => {
    if (text.trim() === '') return;
    let parsed: z.infer<typeof pullLineSchema>;
    try {
      parsed = pullLineSchema.parse(JSON.parse(text));
    } catch (err) {
      throw new DockerApiError('images.pull', 200, `unexpected progress line: ${text.slice(0, 200)}`, { cause: err });
    }
    const failure = parsed.error ?? parsed.errorDetail?.message;
    if (failure !== undefined) throw new DockerApiError('images.pull', 200, `pulling ${name}: ${failure}`);
    if (parsed.status === undefined) return;
    const key = parsed.id ?? '';
    if (lastStatus.get(key) === parsed.status) return;
    lastStatus.set(key, parsed.status);
    progress(parsed.id === undefined ? parsed.status : `${parsed.id}: ${parsed.status}`);
  };
  for await (const chunk of body) {
    pending += chunk.toString();
    const lines = pending.split('\n');
    pending = lines.pop() ?? '';
    for (const line of lines) handle(line);
  }
  handle(pending);
}
