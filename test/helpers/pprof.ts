/**
 * A minimal reader of pprof profiles (gzipped `perftools.profiles.Profile`
 * protobuf, github.com/google/pprof/proto/profile.proto): enough of the wire
 * format to check that what the debug port serves is what `go tool pprof`
 * reads, without another dependency.
 */
import { gunzipSync } from 'node:zlib';

interface Field {
  number: number;
  /** Varint values as bigint; length-delimited values as bytes. */
  value: bigint | Buffer;
}

function readVarint(buffer: Buffer, offset: number): [bigint, number] {
  let result = 0n;
  let shift = 0n;
  for (;;) {
    const byte = buffer[offset++];
    if (byte === undefined) throw new Error('truncated varint');
    result |= BigInt(byte & 0x7f) << shift;
    if ((byte & 0x80) === 0) return [result, offset];
    shift += 7n;
  }
}

/** The top-level fields of one protobuf message. Throws on malformed input. */
export function readFields(buffer: Buffer): Field[] {
  const fields: Field[] = [];
  let offset = 0;
  while (offset < buffer.length) {
    const [key, afterKey] = readVarint(buffer, offset);
    const number = Number(key >> 3n);
    const wireType = Number(key & 7n);
    offset = afterKey;
    if (number === 0) throw new Error('field number 0');
    switch (wireType) {
      case 0: {
        const [value, next] = readVarint(buffer, offset);
        fields.push({ number, value });
        offset = next;
        break;
      }
      case 1:
        fields.push({ number, value: buffer.readBigUInt64LE(offset) });
        offset += 8;
        break;
      case 2: {
        const [length, next] = readVarint(buffer, offset);
        const end = next + Number(length);
        if (end > buffer.length) throw new Error('truncated field');
        fields.push({ number, value: buffer.subarray(next, end) });
        offset = end;
        break;
      }
      case 5:
        fields.push({ number, value: BigInt(buffer.readUInt32LE(offset)) });
        offset += 4;
        break;
      default:
        throw new Error(`unsupported wire type ${wireType}`);
    }
  }
  return fields;
}

function varintField(fields: Field[], number: number): bigint {
  const field = fields.find((f) => f.number === number);
  return typeof field?.value === 'bigint' ? field.value : 0n;
}

export interface DecodedProfile {
  /** `[type, unit]` of each sample value, e.g. `['wall', 'nanoseconds']`. */
  sampleTypes: [string, string][];
  sampleCount: number;
  stringTable: string[];
  functionNames: string[];
  periodType: [string, string] | undefined;
}

/** Gunzip and decode the parts of a pprof profile the tests look at. */
export function decodePprof(gzipped: Buffer): DecodedProfile {
  const fields = readFields(gunzipSync(gzipped));
  const strings = fields.filter((f) => f.number === 6).map((f) => (f.value as Buffer).toString('utf8'));
  const text = (index: bigint): string => {
    const value = strings[Number(index)];
    if (value === undefined) throw new Error(`string index ${index} out of range`);
    return value;
  };
  const valueType = (bytes: Buffer): [string, string] => {
    const inner = readFields(bytes);
    return [text(varintField(inner, 1)), text(varintField(inner, 2))];
  };
  const period = fields.find((f) => f.number === 11);
  return {
    sampleTypes: fields.filter((f) => f.number === 1).map((f) => valueType(f.value as Buffer)),
    sampleCount: fields.filter((f) => f.number === 2).length,
    stringTable: strings,
    functionNames: fields.filter((f) => f.number === 5).map((f) => text(varintField(readFields(f.value as Buffer), 2))),
    periodType: period ? valueType(period.value as Buffer) : undefined,
  };
}
