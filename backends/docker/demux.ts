/**
 * The Engine API's multiplexed stream (an attached exec or container without
 * a terminal): frames of an 8-byte header — stream type (0 stdin, 1 stdout,
 * 2 stderr, 3 the engine's own error text), three zero bytes, the payload
 * length as a big-endian uint32 — each followed by its payload. This turns
 * it back into one byte stream (stdout and stderr together, as a terminal
 * would show them). Payloads are passed on as they arrive, never gathered
 * whole, so memory stays bounded by the chunks in flight; being a Transform,
 * it pauses its source when its reader is slow.
 */
import { Transform, type TransformCallback } from 'node:stream';

const HEADER_BYTES = 8;
const KNOWN_STREAMS = new Set([0, 1, 2, 3]);

export class StreamDemultiplexer extends Transform {
  /** Bytes of a header split across chunks. */
  #header = Buffer.alloc(HEADER_BYTES);
  #headerFilled = 0;
  /** Payload bytes still to come for the current frame. */
  #remaining = 0;

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    let offset = 0;
    while (offset < chunk.length) {
      if (this.#remaining > 0) {
        const take = Math.min(this.#remaining, chunk.length - offset);
        this.push(chunk.subarray(offset, offset + take));
        this.#remaining -= take;
        offset += take;
        continue;
      }
      const take = Math.min(HEADER_BYTES - this.#headerFilled, chunk.length - offset);
      chunk.copy(this.#header, this.#headerFilled, offset, offset + take);
      this.#headerFilled += take;
      offset += take;
      if (this.#headerFilled < HEADER_BYTES) break;
      this.#headerFilled = 0;
      const stream = this.#header[0] as number;
      if (!KNOWN_STREAMS.has(stream) || this.#header.readUIntBE(1, 3) !== 0) {
        callback(new Error(`not a multiplexed docker stream (frame header ${this.#header.toString('hex')})`));
        return;
      }
      this.#remaining = this.#header.readUInt32BE(4);
    }
    callback();
  }

  override _flush(callback: TransformCallback): void {
    if (this.#headerFilled > 0 || this.#remaining > 0) {
      callback(new Error('the docker stream ended inside a frame'));
      return;
    }
    callback();
  }
}
