import { Readable } from 'node:stream';
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  LOG_HIGH_WATER_MARK_BYTES,
  LOG_PART_MAX_BYTES,
  LOG_STREAM_HIGH_WATER_MARK_BYTES,
  LogWriter,
  fold,
  type LogWriterOptions,
} from '../../src/job-log/writer.js';
import { MemoryLogSink } from '../helpers/memory-log-sink.js';

/** Long enough that no timed flush happens during a test that doesn't fake timers. */
const NEVER_MS = 3_600_000;

interface Harness {
  sink: MemoryLogSink;
  log: LogWriter;
  outputs: number;
  maxLengths: number;
}

const open: LogWriter[] = [];

function harness(options: Partial<LogWriterOptions> = {}): Harness {
  const sink = new MemoryLogSink();
  const h: Harness = { sink, log: undefined as unknown as LogWriter, outputs: 0, maxLengths: 0 };
  h.log = new LogWriter({
    sink,
    maxLogBytes: 4 * 1024 * 1024,
    // No room kept for a trailer unless a test asks: limits below are the output's.
    trailerReserveBytes: 0,
    flushIntervalMs: NEVER_MS,
    onOutput: () => h.outputs++,
    onMaxLength: () => h.maxLengths++,
    ...options,
  });
  open.push(h.log);
  return h;
}

/** Let every pending promise callback and I/O callback run (no time passes). */
async function settle(rounds = 5): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise((resolve) => setImmediate(resolve));
}

/**
 * Let the event loop go round until `value()` holds still for a whole round:
 * the streams under test make progress only in callbacks and promises (no
 * timers, no I/O), so a round without change means they are at rest.
 */
async function settleWhileChanging(value: () => number): Promise<void> {
  for (let before = Number.NaN; value() !== before; ) {
    before = value();
    await settle(1);
  }
}

function expectWellFormed(sink: MemoryLogSink, partMax: number): void {
  const parts = sink.parts;
  parts.forEach((part, index) => expect(part.number).toBe(index));
  expect(parts.at(-1)).toMatchObject({ content: '', final: true });
  for (const part of parts.slice(0, -1)) {
    expect(part.final).toBe(false);
    expect(Buffer.byteLength(part.content, 'utf8')).toBeLessThanOrEqual(partMax);
    expect(part.content.length).toBeGreaterThan(0);
  }
  expect(sink.concurrentPublishes).toBe(0);
}

afterEach(async () => {
  vi.useRealTimers();
  // Close what a test left open so no timer survives it (close is idempotent;
  // a writer whose sink failed or is held is just dropped).
  for (const log of open.splice(0)) void log.close().catch(() => {});
});

describe('LogWriter numbering', () => {
  it('numbers parts from 0 and ends with an empty final part', async () => {
    const { sink, log } = harness();
    await log.write('hello ');
    await log.flush();
    await log.write(Buffer.from('world'));
    await log.close();
    expect(sink.parts).toEqual([
      { number: 0, content: 'hello ', final: false },
      { number: 1, content: 'world', final: false },
      { number: 2, content: '', final: true },
    ]);
    expect(log.partsPublished).toBe(3);
    expect(log.bytesWritten).toBe(11);
    expect(sink.flushedCalls).toBe(2);
  });

  it('publishes a final part even when nothing was written', async () => {
    const { sink, log } = harness();
    await log.close();
    expect(sink.parts).toEqual([{ number: 0, content: '', final: true }]);
  });

  it('attaches the started meta to the next part only', async () => {
    const { sink, log } = harness();
    await log.write('before');
    await log.flush();
    log.setStartedMeta({ queued_at: null, repo: 'octo/hello', infra: 'local', queue: 'builds.local' });
    await log.write('after');
    await log.close();
    expect(sink.parts.map((part) => part.meta)).toEqual([
      undefined,
      { queued_at: null, repo: 'octo/hello', infra: 'local', queue: 'builds.local' },
      undefined,
    ]);
  });
});

describe('LogWriter part size', () => {
  it('publishes full parts as soon as they are buffered, the rest on flush', async () => {
    const { sink, log } = harness();
    const text = 'x'.repeat(LOG_PART_MAX_BYTES * 3 + 41);
    await log.write(text);
    await sink.partsPublished(3);
    await settle();
    expect(sink.publishCalls).toBe(3);
    expect(sink.parts.map((part) => part.content.length)).toEqual([1653, 1653, 1653]);
    await log.close();
    expect(sink.parts.map((part) => part.content.length)).toEqual([1653, 1653, 1653, 41, 0]);
    expect(sink.text()).toBe(text);
    expectWellFormed(sink, LOG_PART_MAX_BYTES);
  });

  // Characters of 1, 2, 3 and 4 bytes, and a surrogate-pair emoji sequence.
  const sample = 'a€é中文😀b👩‍💻日本語ñ🚀z';

  it('never splits a character, whatever the offset of the part boundary', async () => {
    for (const partMax of [4, 5, 6, 7, 11]) {
      for (let pad = 0; pad <= partMax; pad++) {
        const text = 'p'.repeat(pad) + sample + sample;
        const { sink, log } = harness({ partMaxBytes: partMax });
        await log.write(text);
        await log.close();
        expectWellFormed(sink, partMax);
        expect(sink.text()).toBe(text);
      }
    }
  });

  it('never splits a character, whatever the offset of the write boundary', async () => {
    const bytes = Buffer.from(sample.repeat(3), 'utf8');
    for (let split = 0; split <= bytes.length; split++) {
      const { sink, log } = harness({ partMaxBytes: 8 });
      await log.write(bytes.subarray(0, split));
      await log.flush();
      await log.write(bytes.subarray(split));
      await log.close();
      expectWellFormed(sink, 8);
      expect(sink.text()).toBe(sample.repeat(3));
    }
  });

  it('reassembles a long multi-byte log written byte by byte at the default part size', async () => {
    const text = `${sample}\r\n`.repeat(400);
    const bytes = Buffer.from(text, 'utf8');
    const { sink, log } = harness();
    for (let i = 0; i < bytes.length; i += 7) await log.write(bytes.subarray(i, i + 7));
    await log.close();
    expectWellFormed(sink, LOG_PART_MAX_BYTES);
    expect(sink.text()).toBe(text);
  });
});

describe('LogWriter UTF-8 decoding', () => {
  it('replaces invalid bytes with U+FFFD', async () => {
    const { sink, log } = harness();
    await log.write(Uint8Array.of(0x61, 0xff, 0x62, 0xc0, 0x80, 0x63));
    await log.close();
    expect(sink.text()).toBe('a\uFFFDb\uFFFD\uFFFDc');
  });

  it('keeps the parts within the size cap when replacements make the text longer', async () => {
    const { sink, log } = harness({ partMaxBytes: 10 });
    await log.write(Buffer.alloc(100, 0xff));
    await log.close();
    expectWellFormed(sink, 10);
    expect(sink.text()).toBe('\uFFFD'.repeat(100));
  });

  it('waits for the rest of a sequence, and shows an unfinished one as U+FFFD at close', async () => {
    const { sink, log } = harness();
    await log.write(Uint8Array.of(0x61, 0xe2));
    await log.flush();
    expect(sink.text()).toBe('a');
    await log.write(Uint8Array.of(0x82, 0xac, 0xf0, 0x9f));
    await log.close('!');
    expect(sink.text()).toBe('a€\uFFFD!');
  });

  it('keeps a leading byte order mark as text', async () => {
    const { sink, log } = harness();
    await log.write(Uint8Array.of(0xef, 0xbb, 0xbf, 0x61, 0xff));
    await log.close();
    expect(sink.text()).toBe('\uFEFFa\uFFFD');
  });
});

describe('LogWriter maximum length', () => {
  it('accepts exactly maxLogBytes, drops the rest and calls onMaxLength once', async () => {
    const h = harness({ maxLogBytes: 10 });
    await h.log.write('12345');
    expect(h.maxLengths).toBe(0);
    await h.log.write('67890abc');
    expect(h.maxLengths).toBe(1);
    await h.log.write('more');
    await h.log.close();
    expect(h.maxLengths).toBe(1);
    expect(h.sink.text()).toBe('1234567890');
    expect(h.log.bytesWritten).toBe(10);
  });

  it('does not call onMaxLength when the log is exactly maxLogBytes long', async () => {
    const h = harness({ maxLogBytes: 10 });
    await h.log.write('1234567890');
    await h.log.close();
    expect(h.maxLengths).toBe(0);
    expect(h.sink.text()).toBe('1234567890');
  });

  it('cuts before a character the limit would split', async () => {
    for (let max = 7; max <= 10; max++) {
      const h = harness({ maxLogBytes: max });
      await h.log.write('1234567€x'); // 7 + 3 + 1 bytes
      await h.log.close();
      expect(h.sink.text()).toBe(max < 10 ? '1234567' : '1234567€');
      expect(h.log.bytesWritten).toBe(max < 10 ? 7 : 10);
      expect(h.maxLengths).toBe(1);
    }
  });

  it('cuts before a character whose first bytes came in an earlier write', async () => {
    const h = harness({ maxLogBytes: 3 });
    await h.log.write(Uint8Array.of(0x61, 0xe2));
    await h.log.write(Uint8Array.of(0x82, 0xac));
    await h.log.close();
    expect(h.sink.text()).toBe('a');
    expect(h.maxLengths).toBe(1);
  });

  it('keeps room for the close trailer within maxLogBytes, so the message saying why shows', async () => {
    const trailer = '\n\nThe job exceeded the maximum log length, and has been terminated.\n\n';
    const h = harness({ maxLogBytes: 5 + trailer.length, trailerReserveBytes: trailer.length });
    await h.log.write('abcdefgh');
    expect(h.maxLengths).toBe(1);
    await h.log.close(trailer);
    expect(h.sink.text()).toBe(`abcde${trailer}`);
    expectWellFormed(h.sink, LOG_PART_MAX_BYTES);
  });

  // A 20 MB cancel reason was written whole past the maximum: every byte of the log counts.
  it('cuts a trailer longer than the room left, between characters, so the whole log stays within maxLogBytes', async () => {
    const h = harness({ maxLogBytes: 20, trailerReserveBytes: 10 });
    await h.log.write('0123456789');
    await h.log.close(`Done: ${'€'.repeat(1000)}`);
    expect(h.sink.text()).toBe('0123456789Done: €');
    expect(Buffer.byteLength(h.sink.text())).toBeLessThanOrEqual(20);
  });

  it('uses the room a short output left for the trailer', async () => {
    const h = harness({ maxLogBytes: 20, trailerReserveBytes: 10 });
    await h.log.write('abc');
    await h.log.close('x'.repeat(100));
    expect(h.sink.text()).toBe(`abc${'x'.repeat(17)}`);
  });

  // Each invalid byte becomes U+FFFD, three bytes: counted before that, a script could publish three times the maximum.
  it('counts invalid bytes as the U+FFFD they become, so the published log never exceeds maxLogBytes', async () => {
    const max = 64 * 1024;
    const h = harness({ maxLogBytes: max, trailerReserveBytes: 1024 });
    for (let i = 0; i < 8; i++) await h.log.write(Buffer.alloc(max / 4, 0xff));
    await h.log.close(`\nThe job exceeded the maximum log length.\n${'x'.repeat(2000)}`);
    expect(h.maxLengths).toBe(1);
    const published = Buffer.byteLength(h.sink.text(), 'utf8');
    expect(published).toBeLessThanOrEqual(max);
    expect(h.sink.text()).toMatch(/^\uFFFD+\nThe job exceeded the maximum log length\.\nx+$/);
    expect(h.log.bytesWritten).toBeLessThanOrEqual(max - 1024);
    expectWellFormed(h.sink, LOG_PART_MAX_BYTES);
  });

  it('cuts invalid bytes at the limit between replacement characters', async () => {
    const h = harness({ maxLogBytes: 10 });
    await h.log.write(Uint8Array.of(0x61, 0xff, 0xfe, 0xfd, 0xfc));
    await h.log.close();
    expect(h.sink.text()).toBe('a\uFFFD\uFFFD\uFFFD');
    expect(h.log.bytesWritten).toBe(10);
    expect(h.maxLengths).toBe(1);
  });

  it('drops an unfinished character at close when its U+FFFD would pass maxLogBytes', async () => {
    const h = harness({ maxLogBytes: 4 });
    await h.log.write(Uint8Array.of(0x61, 0x62, 0x63, 0xe2));
    await h.log.close();
    expect(h.sink.text()).toBe('abc');
  });

  it('refuses a trailer reserve that leaves no room for output', () => {
    expect(() => harness({ maxLogBytes: 10, trailerReserveBytes: 10 })).toThrow(RangeError);
  });
});

describe('LogWriter output reports', () => {
  it('reports every write of output, the dropped ones past the maximum length too, not empty writes or writes after close', async () => {
    const h = harness({ maxLogBytes: 8 });
    await h.log.write('tick');
    await h.log.write('');
    await h.log.write('long enough to pass the limit');
    await h.log.write('dropped');
    expect(h.outputs).toBe(3);
    expect(h.maxLengths).toBe(1);
    await h.log.close();
    await h.log.write('after close');
    expect(h.outputs).toBe(3);
  });
});

describe('LogWriter flush interval', () => {
  it('publishes a partial part flushIntervalMs after it was buffered', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const { sink, log } = harness({ flushIntervalMs: 500 });
    expect(vi.getTimerCount()).toBe(0);
    await log.write('a');
    await vi.advanceTimersByTimeAsync(300);
    await log.write('b');
    await vi.advanceTimersByTimeAsync(199);
    expect(sink.publishCalls).toBe(0);
    await vi.advanceTimersByTimeAsync(1);
    await sink.partsPublished(1);
    expect(sink.parts[0]).toEqual({ number: 0, content: 'ab', final: false });
    // Nothing buffered: no timer runs.
    expect(vi.getTimerCount()).toBe(0);
    await log.write('c');
    await vi.advanceTimersByTimeAsync(500);
    await sink.partsPublished(2);
    expect(sink.parts[1]).toMatchObject({ number: 1, content: 'c' });
  });

  it('leaves no timer behind after close', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const { log } = harness({ flushIntervalMs: 500 });
    await log.write('a');
    expect(vi.getTimerCount()).toBe(1);
    await log.close();
    expect(vi.getTimerCount()).toBe(0);
  });
});

describe('LogWriter backpressure', () => {
  it('keeps write() pending while 64 KiB are unpublished', async () => {
    const { sink, log } = harness();
    sink.hold();
    await log.write(Buffer.alloc(32 * 1024, 0x61));
    let resolved = false;
    const second = log.write(Buffer.alloc(32 * 1024, 0x62)).then(() => {
      resolved = true;
    });
    await sink.publishCalled(1);
    await settle();
    expect(resolved).toBe(false);
    sink.release();
    await second;
    await log.close();
    expect(sink.text()).toBe('a'.repeat(32 * 1024) + 'b'.repeat(32 * 1024));
    expectWellFormed(sink, LOG_PART_MAX_BYTES);
  });

  it('stops reading a piped source while the sink holds', async () => {
    const { sink, log } = harness();
    sink.hold();
    const chunkBytes = 1024;
    // The source's buffer is the test's to choose (Node's default differs between versions); the writer's are not.
    const sourceBufferBytes = 16 * 1024;
    let produced = 0;
    const source = new Readable({
      highWaterMark: sourceBufferBytes,
      read() {
        produced += chunkBytes;
        this.push(Buffer.alloc(chunkBytes, 0x78));
      },
    });
    source.pipe(log.stream);
    await sink.publishCalled(1);
    await settleWhileChanging(() => produced);
    // The writer's high-water mark, its stream's buffer, the source's buffer and the chunk being read.
    expect(produced).toBeLessThanOrEqual(LOG_HIGH_WATER_MARK_BYTES + LOG_STREAM_HIGH_WATER_MARK_BYTES + sourceBufferBytes + chunkBytes);
    source.unpipe(log.stream);
    source.destroy();
    sink.release();
    await log.close();
    expect(sink.text().length).toBeLessThanOrEqual(produced);
  });

  it('holds at most LOG_STREAM_HIGH_WATER_MARK_BYTES in its stream while the log is at its high-water mark, whatever the Node version', async () => {
    const { sink, log } = harness();
    sink.hold();
    // The log at its high-water mark: nothing written into the stream gets further than the stream's buffer.
    void log.write(Buffer.alloc(LOG_HIGH_WATER_MARK_BYTES, 0x61));
    await sink.publishCalled(1);
    const chunk = Buffer.alloc(1024, 0x62);
    let buffered = 0;
    for (let more = true; more; buffered += chunk.length) more = log.stream.write(chunk);
    expect(buffered).toBe(LOG_STREAM_HIGH_WATER_MARK_BYTES);
    sink.release();
    await new Promise((resolve) => log.stream.once('drain', resolve));
    await log.close();
    expect(sink.text()).toBe('a'.repeat(LOG_HIGH_WATER_MARK_BYTES) + 'b'.repeat(LOG_STREAM_HIGH_WATER_MARK_BYTES));
  });
});

describe('LogWriter close', () => {
  it('publishes everything buffered before the final part', async () => {
    const { sink, log } = harness({ flushIntervalMs: 500 });
    await log.write('last words\n');
    await log.close();
    expect(sink.parts).toEqual([
      { number: 0, content: 'last words\n', final: false },
      { number: 1, content: '', final: true },
    ]);
  });

  it('waits for publishes already in flight, then sends the rest and the final part', async () => {
    const { sink, log } = harness({ partMaxBytes: 4 });
    sink.hold();
    void log.write('abcdefghij');
    await sink.publishCalled(1);
    const closing = log.close('!');
    sink.release();
    await closing;
    expect(sink.parts.map((part) => part.content)).toEqual(['abcd', 'efgh', 'ij!', '']);
    expectWellFormed(sink, 4);
  });

  it('is idempotent and ignores writes after it', async () => {
    const { sink, log } = harness();
    await log.write('x');
    const first = log.close('bye');
    expect(log.close('again')).toBe(first);
    await first;
    await log.write('ignored');
    await log.close();
    expect(sink.parts).toEqual([
      { number: 0, content: 'xbye', final: false },
      { number: 1, content: '', final: true },
    ]);
  });

  it('is not triggered by ending the stream', async () => {
    const { sink, log } = harness();
    log.stream.end('from the script');
    await new Promise((resolve) => log.stream.once('finish', resolve));
    await log.flush();
    expect(sink.parts).toEqual([{ number: 0, content: 'from the script', final: false }]);
    await log.write(' and the trailer');
    await log.close();
    expect(sink.text()).toBe('from the script and the trailer');
    expect(sink.parts.at(-1)?.final).toBe(true);
  });
});

describe('LogWriter sink failure', () => {
  it('surfaces a publish error to later writes, flush and close', async () => {
    const { sink, log } = harness();
    const boom = new Error('broker gone');
    sink.failPublish(boom);
    await log.write('x');
    await expect(log.flush()).rejects.toBe(boom);
    await expect(log.write('y')).rejects.toBe(boom);
    await expect(log.close()).rejects.toBe(boom);
    expect(sink.parts).toEqual([]);
  });

  it('rejects a write waiting on backpressure when the sink fails', async () => {
    const { sink, log } = harness({ highWaterMarkBytes: 10 });
    sink.hold();
    const waiting = log.write('x'.repeat(LOG_PART_MAX_BYTES + 20));
    await sink.publishCalled(1);
    const boom = new Error('channel closed');
    sink.failPublish(boom);
    sink.release();
    await expect(waiting).rejects.toBe(boom);
  });

  it('surfaces a flushed() error', async () => {
    const { sink, log } = harness();
    const boom = new Error('not confirmed');
    sink.failFlushed(boom);
    await log.write('x');
    await expect(log.flush()).rejects.toBe(boom);
    await expect(log.write('y')).rejects.toBe(boom);
  });

  it('errors the stream when the sink failed', async () => {
    const { sink, log } = harness();
    const boom = new Error('broker gone');
    sink.failPublish(boom);
    await log.write('x');
    await expect(log.flush()).rejects.toBe(boom);
    const errored = new Promise((resolve) => log.stream.once('error', resolve));
    log.stream.write('y');
    expect(await errored).toBe(boom);
  });

  it('does not throw an error nobody listens to when a write into the stream fails after its reader stopped listening', async () => {
    const { sink, log } = harness();
    const boom = new Error('broker gone');
    sink.failPublish(boom);
    await log.write('x');
    await expect(log.flush()).rejects.toBe(boom);
    // Without a listener of the writer's own, this 'error' would be an uncaught exception.
    const written = new Promise((resolve) => log.stream.write('y', resolve));
    expect(await written).toBe(boom);
    expect(log.stream.errored).toBe(boom);
  });
});

describe('fold', () => {
  it('wraps a body in travis fold markers, adding a newline only when missing', () => {
    expect(fold('worker_info', 'a\r\nb')).toBe(
      'travis_fold:start:worker_info\r\x1b[0Ka\r\nb\ntravis_fold:end:worker_info\r\x1b[0K',
    );
    expect(fold('x', 'body\n')).toBe('travis_fold:start:x\r\x1b[0Kbody\ntravis_fold:end:x\r\x1b[0K');
  });
});
