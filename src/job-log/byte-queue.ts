/**
 * A FIFO of bytes kept as the chunks they arrived in, so buffering a write
 * costs no copy; bytes are copied once, when a part is taken off the front.
 */
export class ByteQueue {
  private readonly chunks: Buffer[] = [];
  /** Bytes of `chunks[0]` already taken. */
  private head = 0;
  /** Bytes queued, in total. */
  length = 0;

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.length += chunk.length;
  }

  /** A copy of the first `n` bytes (`n <= length`), left in the queue. */
  peek(n: number): Buffer {
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    let offset = this.head;
    for (const chunk of this.chunks) {
      if (filled === n) break;
      filled += chunk.copy(out, filled, offset, Math.min(chunk.length, offset + n - filled));
      offset = 0;
    }
    return out;
  }

  /** Drop the first `n` bytes (`n <= length`). */
  drop(n: number): void {
    this.length -= n;
    let left = n;
    let whole = 0;
    let head = this.head;
    for (const chunk of this.chunks) {
      const available = chunk.length - head;
      if (left < available) break;
      left -= available;
      whole++;
      head = 0;
    }
    // One splice, not a shift per chunk: a part can span thousands of tiny writes.
    if (whole > 0) this.chunks.splice(0, whole);
    this.head = head + left;
  }
}
