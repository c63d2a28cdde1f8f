import type { StartAttributes } from './contract.js';

/**
 * The keys under which an operator may name an image for a job
 * (`TRAVIS_WORKER_<BACKEND>_IMAGE_<KEY>`), most specific first: travis-ci/
 * worker's env image selector order, shared by every backend that selects
 * images this way.
 */
export function imageCandidateKeys(attributes: Pick<StartAttributes, 'language' | 'dist' | 'group' | 'os' | 'osxImage'>): string[] {
  const { language: lang, dist, group, os, osxImage } = attributes;
  const keys: string[] = [];
  if (os === 'osx' && osxImage) {
    if (lang) keys.push(`osx_image_${osxImage}_${lang}`);
    keys.push(`osx_image_${osxImage}`);
  }
  if (dist && group && lang) keys.push(`dist_${dist}_group_${group}_${lang}`, `${dist}_${group}_${lang}`);
  if (dist && lang) keys.push(`dist_${dist}_${lang}`, `${dist}_${lang}`);
  if (group && lang) keys.push(`group_${group}_${lang}`, `${group}_${lang}`);
  if (os && lang) keys.push(`os_${os}_${lang}`, `${os}_${lang}`);
  if (dist) keys.push(`default_dist_${dist}`, `dist_${dist}`, dist);
  if (group) keys.push(`default_group_${group}`, `group_${group}`, group);
  if (lang) keys.push(`language_${lang}`, lang);
  if (os) keys.push(`default_os_${os}`, `os_${os}`, os);
  return keys.map((key) => key.toLowerCase());
}

/** The name travis' env selector starts from and ends on when no key is set. */
const DEFAULT_KEY = 'default';

/**
 * The `IMAGE_<KEY>` value travis-ci/worker's env selector picks for a job:
 * the first candidate key set (non-empty), else `default`; a value naming
 * another key is followed once (which gives stable aliases); `default`, as
 * chosen or as followed, becomes `imageDefault`.
 */
export function selectImageSetting(
  attributes: Pick<StartAttributes, 'language' | 'dist' | 'group' | 'os' | 'osxImage'>,
  images: Readonly<Record<string, string>>,
  imageDefault: string,
): string {
  const key = imageCandidateKeys(attributes).find((candidate) => (images[candidate] ?? '') !== '');
  const chosen = key === undefined ? DEFAULT_KEY : (images[key] as string);
  const followed = images[chosen.toLowerCase()] ?? chosen;
  return followed === DEFAULT_KEY ? imageDefault : followed;
}

/** Where an `IMAGE_SELECTOR_TYPE` setting lands: the `IMAGE_<NAME>` family takes every `IMAGE_*` variable not declared. */
const SELECTOR_TYPE_KEY = 'selector_type';

/**
 * travis' `IMAGE_SELECTOR_TYPE`: `env` is what mayfly does; `api` (travis'
 * job-board image API) is not supported, and an env file that relies on it
 * has no `IMAGE_<KEY>` names, so every job would silently boot
 * `IMAGE_DEFAULT`. Throws an `Error` saying so (reported under
 * `imageSelectorType`).
 */
export function checkImageSelectorType(images: Readonly<Record<string, string>>): void {
  const type = images[SELECTOR_TYPE_KEY];
  if (type === undefined || type.trim().toLowerCase() === 'env') return;
  throw new Error(
    `${JSON.stringify(type)} is not supported: mayfly selects images from IMAGE_<KEY> settings (travis' "env" selector); set those, and IMAGE_SELECTOR_TYPE=env or leave it unset`,
  );
}
