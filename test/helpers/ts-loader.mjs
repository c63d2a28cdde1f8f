/** `node --import ./test/helpers/ts-loader.mjs bin/mayfly.ts`: run the sources without a build (see ts-hooks.mjs). */
import { register } from 'node:module';

register('./ts-hooks.mjs', import.meta.url);
