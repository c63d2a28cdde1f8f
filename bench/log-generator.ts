/**
 * What the log-streaming jobs run on the "VM" (a loopback sshd, so Node is
 * there): prints LINES lines of 100 bytes as fast as the terminal takes
 * them, each line starting with the wall-clock time (µs since the epoch)
 * at which the chunk holding it was handed to write(2), so a consumer can
 * tell how long a line took from print to log part.
 *
 *   node log-generator.js LINES [START_FILE]
 *
 * START_FILE, if given, receives the time of the first write (the start of
 * the transfer for the OpenSSH baseline, whose output goes to /dev/null).
 * Line format: `@<16 digits> <padding>\n`.
 */
import { writeFileSync, writeSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** Bytes per line, newline included (a terminal makes it 101 with its CR). */
export const LINE_BYTES = 100;
/** Lines per write: 16 kB chunks keep the syscall count low and the stamps fine-grained. */
const LINES_PER_WRITE = 160;

function nowUs(): number {
  return Math.round((performance.timeOrigin + performance.now()) * 1000);
}

/** Write all of `buffer` to fd 1, waiting out EAGAIN should the terminal be non-blocking. */
function writeAll(buffer: Buffer, length: number): void {
  let offset = 0;
  while (offset < length) {
    try {
      offset += writeSync(1, buffer, offset, length - offset);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') throw err;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1);
    }
  }
}

function main(): void {
  const lines = Number(process.argv[2]);
  const startFile = process.argv[3];
  if (!Number.isInteger(lines) || lines < 0) throw new Error('usage: log-generator LINES [START_FILE]');
  const chunk = Buffer.alloc(LINE_BYTES * LINES_PER_WRITE, 'x');
  for (let i = 1; i <= LINES_PER_WRITE; i++) chunk[i * LINE_BYTES - 1] = 0x0a;
  for (let printed = 0; printed < lines; printed += LINES_PER_WRITE) {
    const count = Math.min(LINES_PER_WRITE, lines - printed);
    const now = nowUs();
    if (printed === 0 && startFile) writeFileSync(startFile, String(now));
    const stamp = `@${String(now).padStart(16, '0')} `;
    for (let line = 0; line < count; line++) chunk.write(stamp, line * LINE_BYTES, 'latin1');
    writeAll(chunk, count * LINE_BYTES);
  }
}

// The bench imports LINE_BYTES from here; only `node log-generator.js` prints.
if (process.argv[1] === fileURLToPath(import.meta.url)) main();
