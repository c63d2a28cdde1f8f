import { PassThrough, Readable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { describe, expect, it } from 'vitest';
import { StreamDemultiplexer } from '../../backends/docker/demux.js';

/** One frame as the engine writes it: stream type, three zero bytes, big-endian length, payload. */
function frame(stream: number, payload: string | Buffer): Buffer {
  const body = Buffer.isBuffer(payload) ? payload : Buffer.from(payload);
  const header = Buffer.alloc(8);
  header[0] = stream;
  header.writeUInt32BE(body.length, 4);
  return Buffer.concat([header, body]);
}

async function demux(chunks: Buffer[]): Promise<string> {
  const out: Buffer[] = [];
  for await (const chunk of Readable.from(chunks).pipe(new StreamDemultiplexer())) out.push(chunk as Buffer);
  return Buffer.concat(out).toString('utf8');
}

describe('docker stream demultiplexer', () => {
  it('joins stdout and stderr payloads in the order they came, without the headers', async () => {
    expect(await demux([frame(1, 'out\n'), frame(2, 'err\n'), frame(1, '1\n2\n')])).toBe('out\nerr\n1\n2\n');
  });

  it('handles headers and payloads split across chunks at every position', async () => {
    const whole = Buffer.concat([frame(1, 'hello '), frame(2, ''), frame(1, 'wörld'), frame(2, '!\n')]);
    for (let cut = 0; cut <= whole.length; cut++) {
      expect(await demux([whole.subarray(0, cut), whole.subarray(cut)])).toBe('hello wörld!\n');
    }
    // And one byte at a time.
    expect(await demux([...whole].map((byte) => Buffer.from([byte])))).toBe('hello wörld!\n');
  });

  it('passes a large frame on in pieces as they arrive', async () => {
    const payload = Buffer.alloc(1 << 20, 'x');
    const whole = frame(1, payload);
    const chunks: Buffer[] = [];
    for (let at = 0; at < whole.length; at += 16 * 1024) chunks.push(whole.subarray(at, at + 16 * 1024));
    // In flowing mode each 'data' event is one pushed piece (async iteration would join buffered ones).
    const out: Buffer[] = [];
    const demultiplexer = Readable.from(chunks).pipe(new StreamDemultiplexer());
    demultiplexer.on('data', (chunk: Buffer) => out.push(chunk));
    await finished(demultiplexer);
    expect(Buffer.concat(out).equals(payload)).toBe(true);
    expect(Math.max(...out.map((chunk) => chunk.length))).toBeLessThanOrEqual(16 * 1024);
  });

  it('fails on a stream that is not multiplexed (a terminal stream read the wrong way)', async () => {
    await expect(demux([Buffer.from('plain terminal output\r\n')])).rejects.toThrow(/not a multiplexed docker stream/);
  });

  it('fails when the stream ends inside a frame', async () => {
    await expect(demux([frame(1, 'complete'), frame(1, 'cut short').subarray(0, 12)])).rejects.toThrow(/ended inside a frame/);
    await expect(demux([frame(1, 'x').subarray(0, 5)])).rejects.toThrow(/ended inside a frame/);
  });

  it('holds back its source while its reader does not read', async () => {
    const source = new PassThrough();
    const demultiplexer = source.pipe(new StreamDemultiplexer({ highWaterMark: 1024 }));
    let accepted = 0;
    // Nobody reads the demultiplexer: writes into the source must eventually be refused.
    while (source.write(frame(1, Buffer.alloc(512)))) {
      accepted += 1;
      if (accepted > 1000) break;
    }
    expect(accepted).toBeLessThan(1000);
    demultiplexer.destroy();
    source.destroy();
  });
});
