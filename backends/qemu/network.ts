/**
 * What each VM's network needs from the host in bridge mode: one of the
 * operator's addresses and a MAC address of its own. (User mode needs only
 * a free loopback port for the SSH forward: the kit's `freePort`.)
 */
import { randomBytes } from 'node:crypto';

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
