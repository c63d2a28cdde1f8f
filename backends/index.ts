/**
 * Every backend mayfly ships. Only the executable (bin/mayfly.ts) and
 * tests import this list: the engine in src/ knows backends only through
 * the contract, and backends know the engine only through its kit
 * (src/backend/kit.ts).
 */
import type { BackendDefinition } from '../src/backend/kit.js';
import { definition as docker } from './docker/index.js';
import { definition as ec2 } from './ec2/index.js';
import { definition as fake } from './fake/index.js';
import { definition as gce } from './gce/index.js';
import { definition as local } from './local/index.js';
import { definition as qemu } from './qemu/index.js';
import { definition as ssh } from './ssh/index.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- each backend has its own settings type
export const backends: readonly BackendDefinition<any>[] = [local, fake, ssh, ec2, gce, docker, qemu];
