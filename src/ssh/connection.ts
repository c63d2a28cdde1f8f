/**
 * An established SSH connection and whether it is still open, so owners can
 * tell "reuse it" from "dial again" and can wait for it to be fully closed
 * (no socket left behind) when they are done.
 */
import type { Client } from 'ssh2';

/**
 * How long a polite close (SSH disconnect, then FIN) may take before the
 * socket is destroyed; a peer that vanished never answers.
 */
const CLOSE_GRACE_MS = 2_000;

export class SshConnection {
  readonly client: Client;
  /** Resolves when the socket has closed, whoever closed it. */
  readonly closed: Promise<void>;
  #open = true;

  /** Adopt `client` right after its 'ready' event, before any later event can fire. */
  constructor(client: Client) {
    this.client = client;
    this.closed = new Promise((resolve) => {
      client.once('close', () => {
        this.#open = false;
        resolve();
      });
    });
  }

  /** False once the connection dropped or was closed. */
  get isOpen(): boolean {
    return this.#open;
  }

  /** Close the connection and wait until the socket is gone. Idempotent. */
  async close(): Promise<void> {
    if (this.#open) {
      // Not open from now on: nobody may start a command on a closing connection.
      this.#open = false;
      this.client.end();
      const timer = setTimeout(() => this.client.destroy(), CLOSE_GRACE_MS);
      timer.unref();
      await this.closed;
      clearTimeout(timer);
    }
    await this.closed;
  }
}
