// Puts the example jobs into the embedded default file queue, so that the
// README's first command (`npm start`) has something to run. Respects TRAVIS_WORKER_BASE_DIR
// and TRAVIS_WORKER_QUEUE_NAME when they are set; does nothing for amqp.
import { copyFileSync, mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

const env = process.env;
if ((env.TRAVIS_WORKER_QUEUE_TYPE ?? 'file') !== 'file') process.exit(0);
const created = join(env.TRAVIS_WORKER_BASE_DIR ?? './var/file-queue', env.TRAVIS_WORKER_QUEUE_NAME ?? 'builds', '10-created.d');
mkdirSync(created, { recursive: true });
const examples = new URL('../examples/', import.meta.url);
const names = readdirSync(examples).filter((name) => name.endsWith('.json'));
for (const name of names) copyFileSync(new URL(name, examples), join(created, name));
console.log(`queued ${names.length} example jobs in ${created}`);
