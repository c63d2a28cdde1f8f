import type { Writable } from 'node:stream';

/**
 * Resolves once everything written to `output` so far has been processed
 * (its write callbacks ran). A piped source's 'end' only means every chunk
 * was handed to `output.write`; a slow writable may still hold some in its
 * buffer, and whoever reads the result next (the log writer closing the
 * log) must not run ahead of them. An empty write is processed after all
 * earlier ones, in order.
 */
export function outputFlushed(output: Writable): Promise<void> {
  if (output.destroyed || output.writableEnded) return Promise.resolve();
  return new Promise((resolve) => output.write(Buffer.alloc(0), () => resolve()));
}
