/**
 * A QMP (QEMU Machine Protocol) client on QEMU's stdin/stdout: JSON
 * messages one a line. After the greeting it sends `qmp_capabilities`
 * (leaving negotiation mode), then one command at a time; events (e.g.
 * `SHUTDOWN`, `GUEST_PANICKED`) are handed to a listener as they come.
 */
import { createInterface } from 'node:readline';
import type { Readable, Writable } from 'node:stream';

/** One QMP event, as QEMU sends it. */
export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
}

interface Pending {
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
}

export class QmpClient {
  readonly #input: Writable;
  readonly #pending = new Map<number, Pending>();
  #nextId = 1;
  #closed: Error | undefined;
  readonly #greeted: Promise<void>;

  /** `output` is QEMU's stdout, `input` its stdin; `onEvent` hears every event. */
  constructor(output: Readable, input: Writable, onEvent: (event: QmpEvent) => void) {
    this.#input = input;
    // A write to a QEMU that has gone is reported by its exit, not as an unhandled stream error.
    input.on('error', () => {});
    let greet: () => void = () => {};
    let refuse: (err: Error) => void = () => {};
    this.#greeted = new Promise<void>((resolve, reject) => {
      greet = resolve;
      refuse = reject;
    });
    const lines = createInterface({ input: output, crlfDelay: Infinity });
    lines.on('line', (line) => {
      let message: Record<string, unknown>;
      try {
        message = JSON.parse(line) as Record<string, unknown>;
      } catch {
        return; // QEMU writes only QMP here; anything else is not for us.
      }
      if ('QMP' in message) return greet();
      if (typeof message['event'] === 'string') return onEvent(message as unknown as QmpEvent);
      const pending = this.#pending.get(message['id'] as number);
      if (pending === undefined) return;
      this.#pending.delete(message['id'] as number);
      const error = message['error'] as { class?: string; desc?: string } | undefined;
      if (error !== undefined) pending.reject(new Error(`QMP: ${error.class ?? 'error'}: ${error.desc ?? ''}`));
      else pending.resolve(message['return']);
    });
    lines.on('close', () => {
      this.#closed = new Error('QMP: QEMU closed its monitor');
      refuse(this.#closed);
      for (const pending of this.#pending.values()) pending.reject(this.#closed);
      this.#pending.clear();
    });
  }

  /** Waits for the greeting and leaves negotiation mode; rejects when QEMU ends first. */
  async connect(): Promise<void> {
    await this.#greeted;
    await this.execute('qmp_capabilities');
  }

  /** Run one command; resolves with its `return`, rejects with QEMU's error or when QEMU goes away. */
  execute(command: string, args?: Record<string, unknown>): Promise<unknown> {
    if (this.#closed !== undefined) return Promise.reject(this.#closed);
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.#input.write(`${JSON.stringify({ execute: command, id, ...(args === undefined ? {} : { arguments: args }) })}\n`);
    });
  }
}
