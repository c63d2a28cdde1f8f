/**
 * Which image a job's container is made from. The job's `image_name` wins.
 * With the `tag` selector (travis' default): `TRAVIS_WORKER_DOCKER_IMAGE_<LANGUAGE>`,
 * else the first image the engine has tagged `travis:<language>`,
 * `<language>`, `travis:default` or `default`. With the `env` selector: the
 * `IMAGE_<KEY>` travis' env selector picks (see `selectImageSetting`).
 * An image the engine lacks is pulled when `PULL` is set; otherwise the
 * start fails with an error naming it.
 */
import { InstanceStartError, PayloadError, selectImageSetting, type StartAttributes } from '../../src/backend/kit.js';
import type { DockerEngine, ImageSummary } from './engine.js';

export interface ImageSettings {
  selector: 'tag' | 'env';
  /** `IMAGE_<NAME>` variables by lower-case name. */
  images: Record<string, string>;
  pull: boolean;
}

export interface SelectedImage {
  /** What the container is created from (an image id or a name the engine knows). */
  ref: string;
  /** For the job log and the worker-info fold. */
  name: string;
}

/**
 * A docker reference, loosely (`[registry[:port]/]name[:tag][@digest]` or an
 * id): letters, digits and `._/:@-`, never `..`. It ends up in a URL path,
 * so nothing else may pass.
 */
const IMAGE_NAME = /^[A-Za-z0-9][A-Za-z0-9._/:@-]*$/;

export function isValidImageName(name: string): boolean {
  return IMAGE_NAME.test(name) && !name.includes('..') && name.length <= 512;
}

/** `IMAGE_<NAME>` keys are upper snake case; `objective-c` is `IMAGE_OBJECTIVE_C`. */
function familyKey(language: string): string {
  return language.toLowerCase().replace(/[^a-z0-9]+/g, '_');
}

/** The tags travis' tag selector tries, in order. */
export function candidateTags(language: string): string[] {
  const tags = [`travis:${language}`, language, 'travis:default', 'default'];
  return [...new Set(tags.filter((tag) => tag !== '' && tag !== 'travis:'))];
}

/** The first candidate some image carries (a bare name means `:latest`, as docker reads it), or an image id. */
export function findByTag(candidates: readonly string[], images: readonly ImageSummary[]): SelectedImage | undefined {
  for (const candidate of candidates) {
    const tag = candidate.includes(':') ? candidate : `${candidate}:latest`;
    for (const image of images) {
      if (image.Id === candidate || image.RepoTags?.includes(tag) === true) return { ref: image.Id, name: candidate };
    }
  }
  return undefined;
}

function missing(name: string, where: string, how: string): InstanceStartError {
  return new InstanceStartError(`image ${name} does not exist on the Docker engine at ${where} (${how})`, {
    userMessage: `The Docker image "${name}" is not available on this worker's Docker host; the job will be run again.`,
  });
}

/**
 * The image name the `env` selector picks: the `IMAGE_<KEY>` travis' env
 * selector picks for the job's language, dist, group and os, else
 * `IMAGE_DEFAULT`, else an image literally named `default`.
 */
export function envImageName(attributes: StartAttributes, images: Readonly<Record<string, string>>): string {
  return selectImageSetting(attributes, images, 'default');
}

export async function selectImage(
  engine: DockerEngine,
  attributes: StartAttributes,
  settings: ImageSettings,
  progress: (line: string) => void,
  signal: AbortSignal,
): Promise<SelectedImage> {
  if (attributes.imageName !== undefined && attributes.imageName !== '') {
    return named(engine, attributes.imageName, 'config.image_name', settings, progress, signal);
  }
  if (settings.selector === 'env') {
    return named(engine, envImageName(attributes, settings.images), 'IMAGE_<KEY> (env selector)', settings, progress, signal);
  }
  const language = attributes.language.toLowerCase();
  const override = settings.images[familyKey(language)];
  if (override !== undefined && override !== '') {
    return named(engine, override, `IMAGE_${familyKey(language).toUpperCase()}`, settings, progress, signal);
  }
  const candidates = candidateTags(language);
  const found = findByTag(candidates, await engine.listImages(signal));
  if (found === undefined) throw missing(candidates.join(', '), engine.api.label, 'no image has any of these tags');
  return found;
}

/** An image asked for by name: the engine has it, or it is pulled, or the start fails naming it. */
async function named(
  engine: DockerEngine,
  name: string,
  source: string,
  settings: ImageSettings,
  progress: (line: string) => void,
  signal: AbortSignal,
): Promise<SelectedImage> {
  if (!isValidImageName(name)) {
    if (source === 'config.image_name') throw new PayloadError(source, `${JSON.stringify(name)} is not a Docker image name`);
    throw new InstanceStartError(`TRAVIS_WORKER_DOCKER_${source}: ${JSON.stringify(name)} is not a Docker image name`);
  }
  if ((await engine.imageId(name, signal)) !== undefined) return { ref: name, name };
  if (!settings.pull) throw missing(name, engine.api.label, `asked for by ${source}; set TRAVIS_WORKER_DOCKER_PULL=true to pull missing images`);
  progress(`Pulling Docker image ${name}`);
  try {
    await engine.pullImage(name, (line) => progress(`  ${line}`), signal);
  } catch (err) {
    if (signal.aborted) throw signal.reason;
    throw new InstanceStartError(`could not pull image ${name}: ${(err as Error).message}`, {
      cause: err,
      userMessage: `The Docker image "${name}" could not be pulled; the job will be run again.`,
    });
  }
  return { ref: name, name };
}
