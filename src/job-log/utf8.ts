/**
 * UTF-8 boundary arithmetic for the log writer and for texts bounded in
 * bytes: where a byte buffer can be cut without splitting a multi-byte
 * sequence.
 */

/**
 * How many bytes the sequence led by `byte` should have, by the WHATWG
 * decoder's rules (C2..DF two, E0..EF three, F0..F4 four). Bytes that can't
 * lead a sequence (ASCII, continuations, C0, C1, F5..FF) count as one: the
 * decoder deals with them on their own.
 */
function sequenceLength(byte: number): number {
  if (byte >= 0xc2 && byte <= 0xdf) return 2;
  if (byte >= 0xe0 && byte <= 0xef) return 3;
  if (byte >= 0xf0 && byte <= 0xf4) return 4;
  return 1;
}

/**
 * The largest `cut <= end` such that `bytes[0, cut)` does not end in the
 * middle of a multi-byte sequence: if a sequence starts in the last three
 * bytes before `end` and needs more bytes than are there, the cut moves to
 * just before it. Only the tail is examined; invalid bytes elsewhere are
 * left to the decoder.
 */
export function completeEnd(bytes: Uint8Array, end: number): number {
  for (let back = 1; back <= 3 && back <= end; back++) {
    const byte = bytes[end - back] as number;
    if ((byte & 0xc0) === 0x80) continue;
    return back < sequenceLength(byte) ? end - back : end;
  }
  return end;
}

/**
 * In *valid* UTF-8, the largest `cut <= end` that starts a character
 * (`bytes[cut]` is not a continuation byte), so `bytes[0, cut)` is whole
 * characters. `end` must be less than `bytes.length`.
 */
export function characterStart(bytes: Uint8Array, end: number): number {
  let cut = end;
  while (cut > 0 && ((bytes[cut] as number) & 0xc0) === 0x80) cut--;
  return cut;
}

/**
 * `text` cut to at most `maxBytes` bytes of UTF-8, between characters. The
 * result is a fresh string: a short cut of a huge text does not keep the huge
 * one alive.
 */
export function truncateUtf8(text: string, maxBytes: number): string {
  if (Buffer.byteLength(text, 'utf8') <= maxBytes) return text;
  const bytes = Buffer.from(text, 'utf8');
  return bytes.toString('utf8', 0, characterStart(bytes, Math.max(0, maxBytes)));
}
