import { readFileSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** What travis-ci/worker stamps in at build time and mayfly cannot know, as travis reports it then. */
const UNKNOWN = '?';

interface PackageInfo {
  version: string;
  /** The commit the package was packed from; npm writes it into package.json when it packs from a git checkout. */
  gitHead?: string;
}

/**
 * The package's version and commit, read once. The file sits at
 * src/version.ts when run from source (tests) and at dist/src/version.js
 * when built, so package.json is one or two levels up.
 */
function readPackage(): PackageInfo {
  for (const relative of ['../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(relative, import.meta.url), 'utf8')) as { name?: string; version?: string; gitHead?: string };
      if (pkg.name === 'mayfly' && pkg.version) return { version: pkg.version, ...(pkg.gitHead ? { gitHead: pkg.gitHead } : {}) };
    } catch {
      // Not at this level.
    }
  }
  return { version: '0.0.0-unknown' };
}

const pkg = readPackage();

export const VERSION = pkg.version;

/** The commit mayfly was packed from (travis' `revision`), `?` when it ran from a checkout. */
export const REVISION = pkg.gitHead ?? UNKNOWN;

/**
 * When this build was made (travis' `generated`): the time this very file
 * was written, which for dist/ is when `npm run build` ran.
 */
export const GENERATED = generatedAt();

function generatedAt(): string {
  try {
    return statSync(fileURLToPath(import.meta.url)).mtime.toISOString();
  } catch {
    return UNKNOWN;
  }
}
