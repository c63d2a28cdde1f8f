/**
 * `npm run bench`: starts the bench (bench/main.ts) in a session of its
 * own, so that Ctrl-C reaches only this launcher, not the sshd targets and
 * worker processes the bench started (they would die in the middle of
 * their own cleanup, leaving sessions behind). The launcher turns the first
 * Ctrl-C into a SIGTERM for the bench, which stops everything in order and
 * exits 130.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const main = fileURLToPath(new URL('./main.js', import.meta.url));
const bench = spawn(process.execPath, [main, ...process.argv.slice(2)], { detached: true, stdio: 'inherit' });

let interrupts = 0;
function interrupt(): void {
  interrupts += 1;
  if (interrupts === 1) {
    console.error('\nbench: interrupted; stopping workers and sshd targets, deleting the vhost...');
    bench.kill('SIGTERM');
  } else if (interrupts === 2) {
    console.error('bench: still cleaning up; Ctrl-C once more leaves the cleanup running in the background');
  } else {
    process.exit(130);
  }
}
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, interrupt);

bench.on('error', (err) => {
  console.error(`bench: could not start ${main}: ${err.message}`);
  process.exit(1);
});
bench.on('exit', (code, signal) => process.exit(code ?? (signal === null ? 1 : 130)));
