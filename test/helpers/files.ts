import { existsSync, watch } from 'node:fs';
import { basename, dirname } from 'node:path';

/** Resolves once `path` exists, woken by the directory's change events. */
export function fileAppears(path: string): Promise<void> {
  return new Promise((resolve) => {
    const watcher = watch(dirname(path), (_event, name) => {
      if (name === basename(path) && existsSync(path)) {
        watcher.close();
        resolve();
      }
    });
    if (existsSync(path)) {
      watcher.close();
      resolve();
    }
  });
}
