import { Writable } from 'node:stream';

/** A Writable that keeps everything written to it, for asserting on output. */
export class CollectingWritable extends Writable {
  private readonly chunks: Buffer[] = [];

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.chunks.push(chunk);
    callback();
  }

  get text(): string {
    return Buffer.concat(this.chunks).toString('utf8');
  }
}
