import { compress as libzstd } from '@mongodb-js/zstd';
import { describe, expect, it } from 'vitest';
import { compressChunks, decompressBlob, ZstdDecoder } from '../../src/cas/compression.js';
import { Code, StatusError } from '../../src/util/status-error.js';

const MAGIC = Buffer.from([0x28, 0xb5, 0x2f, 0xfd]);
const blockHeader = (type: number, size: number, last: boolean): Buffer => {
  const b = Buffer.alloc(3);
  b.writeUIntLE((size << 3) | (type << 1) | (last ? 1 : 0), 0, 3);
  return b;
};
/** A frame of raw blocks (window 1 MiB), with a checksum field when asked (its value unchecked: the digest is what counts). */
function rawFrame(data: Buffer, checksum = false): Buffer {
  const parts: Buffer[] = [MAGIC, Buffer.from([checksum ? 0x04 : 0x00, 10 << 3])];
  for (let off = 0; off < data.length || off === 0; off += 100_000) {
    const piece = data.subarray(off, off + 100_000);
    parts.push(blockHeader(0, piece.length, off + 100_000 >= data.length), piece);
    if (data.length === 0) break;
  }
  if (checksum) parts.push(Buffer.from([1, 2, 3, 4]));
  return Buffer.concat(parts);
}
/** `blocks` RLE blocks of 128 KiB of `byte` each: a few bytes that regenerate a lot. */
function rleFrame(blocks: number, byte = 0x61): Buffer {
  const parts: Buffer[] = [MAGIC, Buffer.from([0x00, 13 << 3])]; // an 8 MiB window
  for (let i = 0; i < blocks; i++) parts.push(blockHeader(1, 128 * 1024, i === blocks - 1), Buffer.from([byte]));
  return Buffer.concat(parts);
}
const skippable = (payload: Buffer): Buffer => {
  const size = Buffer.alloc(4);
  size.writeUInt32LE(payload.length);
  return Buffer.concat([Buffer.from([0x50, 0x2a, 0x4d, 0x18]), size, payload]);
};

function decodeInPieces(stream: Buffer, expected: number, piece: number): Buffer {
  const d = new ZstdDecoder(expected, 'test blob');
  const out: Uint8Array[] = [];
  for (let off = 0; off < stream.length; off += piece) out.push(...d.push(stream.subarray(off, off + piece)));
  out.push(...d.end());
  return Buffer.concat(out);
}

describe('ZstdDecoder', () => {
  it('decodes frames of every kind in a row (libzstd, raw blocks with a checksum, skippable, RLE), fed one byte at a time or all at once', async () => {
    const text = Buffer.from('the quick brown fox jumps over the lazy dog\n'.repeat(5000));
    const raw = Buffer.from(Array.from({ length: 250_000 }, (_, i) => (i * 7) % 251));
    const stream = Buffer.concat([await libzstd(text, 3), rawFrame(raw, true), skippable(Buffer.from('ignored')), rleFrame(3), rawFrame(Buffer.alloc(0))]);
    const expected = Buffer.concat([text, raw, Buffer.alloc(3 * 128 * 1024, 0x61)]);
    for (const piece of [1, 7, 4096, stream.length]) expect(decodeInPieces(stream, expected.length, piece).equals(expected), `pieces of ${piece}`).toBe(true);
  });

  it('decodes what reexec itself sends (one frame per MiB)', async () => {
    const data = Buffer.from(Array.from({ length: 3 * 1024 * 1024 + 5 }, (_, i) => (i >> 10) % 256));
    async function* chunks() {
      for (let off = 0; off < data.length; off += 300_000) yield data.subarray(off, off + 300_000);
    }
    const frames: Buffer[] = [];
    for await (const f of compressChunks(chunks())) frames.push(f);
    expect(frames.length).toBe(3);
    expect(decompressBlob(Buffer.concat(frames), data.length, 'x').equals(data)).toBe(true);
  });

  it('yields bounded pieces as it goes: 1 GiB of RLE blocks in one push is not decoded at once', () => {
    const frame = rleFrame(8192); // 1 GiB in 32 KiB
    const d = new ZstdDecoder(1024 * 1024 * 1024, 'big');
    const pieces = d.push(frame);
    let taken = 0;
    for (const p of pieces) {
      expect(p.byteLength).toBeLessThanOrEqual(128 * 1024);
      taken += p.byteLength;
      // What the decoder has produced is never far ahead of what was taken.
      expect(d.decompressedBytes - taken).toBeLessThan(2 * 1024 * 1024);
      if (taken >= 64 * 1024 * 1024) break;
    }
    expect(taken).toBe(64 * 1024 * 1024);
  });

  it('refuses output past the expected size, truncation, garbage, reserved bits and big windows, with INVALID_ARGUMENT naming the blob', () => {
    const invalid = (fn: () => unknown, ...mentions: string[]): void => {
      try {
        fn();
      } catch (err) {
        expect(err).toBeInstanceOf(StatusError);
        expect((err as StatusError).code).toBe(Code.INVALID_ARGUMENT);
        for (const m of mentions) expect((err as StatusError).message).toContain(m);
        return;
      }
      throw new Error('expected INVALID_ARGUMENT');
    };
    invalid(() => decompressBlob(rleFrame(4), 100_000, 'blob B'), 'blob B', 'more than the 100000 bytes');
    invalid(() => decompressBlob(rawFrame(Buffer.alloc(1000)).subarray(0, 500), 1000, 'blob B'), 'middle of a frame');
    invalid(() => decompressBlob(Buffer.from('plain text, not zstd'), 100, 'blob B'), 'zstd frame');
    invalid(() => decompressBlob(Buffer.concat([MAGIC, Buffer.from([0x08, 10 << 3])]), 100, 'blob B'), 'reserved');
    invalid(() => decompressBlob(Buffer.concat([MAGIC, Buffer.from([0x00, 14 << 3]), blockHeader(0, 0, true)]), 100, 'blob B'), 'window');
    invalid(() => decompressBlob(Buffer.concat([MAGIC, Buffer.from([0x01, 10 << 3, 7]), blockHeader(0, 0, true)]), 100, 'blob B'), 'dictionary');
    invalid(() => decompressBlob(Buffer.concat([MAGIC, Buffer.from([0x00, 10 << 3]), blockHeader(3, 0, true)]), 100, 'blob B'), 'reserved type');
  });
});
