/**
 * Which image a job boots: a name pattern chosen from the `IMAGE_<KEY>`
 * settings the way travis-ci/worker's env selector chooses (see
 * `selectImageSetting`), then the newest
 * image whose name fully matches that regular expression.
 */
import { selectImageSetting, InstanceStartError, type StartAttributes } from '../../src/backend/kit.js';
import type { GceApi, GceImage } from './api.js';

/** Images are published now and then; a pattern's answer is reused this long, in ms. */
const IMAGE_CACHE_MS = 5 * 60_000;

type SelectAttributes = Pick<StartAttributes, 'language' | 'dist' | 'group' | 'os' | 'osxImage' | 'imageName'>;


/** A payload's `image_name` may carry `+` as `%2B`, as the settings do in env files (travis documents it); accept both. */
function decodePattern(pattern: string): string {
  try {
    return decodeURIComponent(pattern);
  } catch {
    return pattern;
  }
}

/**
 * The image name pattern for a job: its explicit `image_name` (URL-decoded),
 * else the `IMAGE_<KEY>` travis' env selector picks (`IMAGE_DEFAULT` when
 * none). Settings are used as they are: the loader URL-unescaped them
 * already, and a second pass would turn an operator's `%252B` (a literal
 * `%2B`) into `+`.
 */
export function imagePattern(attributes: SelectAttributes, images: Readonly<Record<string, string>>, imageDefault: string): string {
  const requested = attributes.imageName?.trim();
  const chosen = requested ? decodePattern(requested) : selectImageSetting(attributes, images, imageDefault);
  return chosen === 'default' ? imageDefault : chosen;
}

/** Every alias of `IMAGE_ALIASES` must name an `IMAGE_<ALIAS>` setting. */
export function checkAliases(aliases: readonly string[], images: Readonly<Record<string, string>>): void {
  for (const alias of aliases) {
    const key = alias.trim().toLowerCase().replace(/[^a-z0-9]/g, '_');
    if (key !== '' && images[key] === undefined) {
      throw new Error(`names ${alias}, but TRAVIS_WORKER_GCE_IMAGE_${key.toUpperCase()} is not set`);
    }
  }
}

const created = (image: GceImage): number => Date.parse(image.creationTimestamp ?? '') || 0;

/** The newest image (creation time, then name, as travis' names end in a timestamp) among `images`. */
export function newestImage(images: readonly GceImage[]): GceImage | undefined {
  return images
    .filter((image) => image.status === undefined || image.status === null || image.status === 'READY')
    .filter((image) => !['DEPRECATED', 'OBSOLETE', 'DELETED'].includes(String(image.deprecated?.state ?? '')))
    .reduce<GceImage | undefined>((best, image) => {
      if (best === undefined) return image;
      const order = created(image) - created(best) || String(image.name ?? '').localeCompare(String(best.name ?? ''));
      return order > 0 ? image : best;
    }, undefined);
}

/** Resolves patterns to images through the API, remembering answers for a while. */
export class ImageResolver {
  readonly #cache = new Map<string, { image: GceImage; until: number }>();

  constructor(
    private readonly api: GceApi,
    private readonly project: () => string,
  ) {}

  async resolve(pattern: string, signal: AbortSignal): Promise<GceImage> {
    const cached = this.#cache.get(pattern);
    if (cached !== undefined && cached.until > Date.now()) return cached.image;
    // The API matches `name eq <re2>` against the whole name.
    const images = await this.api.listImages(this.project(), `name eq ${pattern}`, signal);
    const image = newestImage(images);
    if (image === undefined || !image.selfLink) {
      throw new InstanceStartError(`no image in project ${this.project()} matches ${pattern}`, {
        userMessage: `No build image matches "${pattern}".`,
      });
    }
    this.#cache.set(pattern, { image, until: Date.now() + IMAGE_CACHE_MS });
    return image;
  }
}
