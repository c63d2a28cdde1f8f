import { readFileSync } from 'node:fs';

/**
 * The package version, read once. The file sits at src/version.ts when run
 * from source (tests) and at dist/src/version.js when built, so package.json
 * is one or two levels up.
 */
function readVersion(): string {
  for (const relative of ['../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(relative, import.meta.url), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'mayfly' && pkg.version) return pkg.version;
    } catch {
      // Not at this level.
    }
  }
  return '0.0.0-unknown';
}

export const VERSION = readVersion();
