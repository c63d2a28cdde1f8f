import { Writable } from 'node:stream';

/** A Writable that keeps everything written to it, for asserting on output. */
export class CollectingWritable extends Writable {
  private readonly chunks: Buffer[] = [];
  private readonly waiters: { text: string; resolve: () => void }[] = [];

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.chunks.push(chunk);
    const text = this.text;
    for (const waiter of this.waiters.filter((w) => text.includes(w.text))) {
      this.waiters.splice(this.waiters.indexOf(waiter), 1);
      waiter.resolve();
    }
    callback();
  }

  get text(): string {
    return Buffer.concat(this.chunks).toString('utf8');
  }

  /** Resolves once the output contains `text`. */
  until(text: string): Promise<void> {
    if (this.text.includes(text)) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ text, resolve }));
  }
}
