/**
 * What each VM's network needs from the host: in user mode a loopback port
 * for the SSH forward, in bridge mode one of the operator's addresses and a
 * MAC address of its own.
 */
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
import { LOOPBACK } from './command.js';

/** A loopback port nothing listens on right now (the kernel picks it). QEMU binds it a moment later. */
export function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, LOOPBACK, () => {
      const address = server.address();
      server.close(() => {
        if (address !== null && typeof address === 'object') resolve(address.port);
        else reject(new Error('the kernel gave no port'));
      });
    });
  });
}

/** A MAC address in QEMU's locally administered range (52:54:00), random in the rest. */
export function randomMac(): string {
  return ['52', '54', '00', ...[...randomBytes(3)].map((byte) => byte.toString(16).padStart(2, '0'))].join(':');
}

/** The bridge mode's guest addresses, each given to one running VM at a time. */
export class AddressPool {
  readonly #free: string[];

  constructor(addresses: readonly string[]) {
    this.#free = [...addresses];
  }

  /** An address no running VM has, or undefined when all are taken. */
  checkout(): string | undefined {
    return this.#free.shift();
  }

  checkin(address: string): void {
    if (!this.#free.includes(address)) this.#free.push(address);
  }
}
