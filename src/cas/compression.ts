import { compress as zstdCompress } from '@mongodb-js/zstd';
import { Decompress } from 'fzstd';
import type { CompressorName } from '../digest/resource-name.js';
import { invalidArgument, StatusError } from '../util/status-error.js';
import { ZstdFrameScanner } from './zstd-frames.js';

/**
 * zstd for the CAS: what ByteStream's "compressed-blobs/zstd/…" names and the batch RPCs'
 * compressor fields carry. Blobs stay stored uncompressed and verified against their
 * uncompressed digest; this only transcodes on the way in and out, in bounded pieces.
 *
 * Two libraries, because npm has no maintained zstd binding for Node 20 with a streaming API
 * that installs without building: the native @mongodb-js/zstd (libzstd, run on libuv's thread
 * pool) compresses whole buffers, so a stream goes out as one frame per chunk (a zstd stream
 * may hold any number of frames); fzstd (plain JavaScript) decodes incrementally, which a
 * client's single multi-GiB frame needs.
 */

/** REAPI Compressor.Value numbers. */
export const COMPRESSOR_VALUES: Record<CompressorName, number> = { identity: 0, zstd: 1, deflate: 2, brotli: 3 };
/** What this server serves besides identity, for ByteStream and both batch RPCs alike. */
export const SERVED_COMPRESSORS: readonly CompressorName[] = ['zstd'];

export function isServed(c: CompressorName): boolean {
  return c === 'identity' || SERVED_COMPRESSORS.includes(c);
}

/** The compressor of a REAPI Compressor.Value, or undefined for a value REAPI does not define. */
export function compressorOfValue(value: number | null | undefined): CompressorName | undefined {
  const v = value ?? 0;
  return (Object.keys(COMPRESSOR_VALUES) as CompressorName[]).find((k) => COMPRESSOR_VALUES[k] === v);
}

/**
 * zstd level for what the server compresses: 1 is zstd's fastest regular level (several
 * hundred MB/s a core). The spec lets servers pick any level, and at a few hundred MB/s the
 * link to a remote client, not this, is what compression is for.
 */
const LEVEL = 1;
/** Input bytes per frame of a compressed stream. */
const FRAME_INPUT_BYTES = 1024 * 1024;
/** The decoder is fed pieces that regenerate at most about this much (plus one block). */
const DECODE_SLICE_BYTES = 1024 * 1024;

/** One zstd frame holding `data`. */
export async function compressBlob(data: Uint8Array): Promise<Buffer> {
  return zstdCompress(Buffer.from(data.buffer, data.byteOffset, data.byteLength), LEVEL);
}

/**
 * A byte stream as a zstd stream: one frame per ~1 MiB of input, the next frame compressing
 * while the previous one is sent. Always at least one frame, so that even nothing reads as a
 * well-formed zstd stream.
 */
export async function* compressChunks(chunks: AsyncIterable<Uint8Array>): AsyncGenerator<Buffer> {
  let pending: Promise<Buffer> | undefined;
  let gathered: Uint8Array[] = [];
  let gatheredBytes = 0;
  let frames = 0;
  const cut = (): Promise<Buffer> => {
    const input = gathered.length === 1 ? gathered[0]! : Buffer.concat(gathered);
    gathered = [];
    gatheredBytes = 0;
    frames++;
    return compressBlob(input);
  };
  for await (const chunk of chunks) {
    gathered.push(chunk);
    gatheredBytes += chunk.byteLength;
    if (gatheredBytes < FRAME_INPUT_BYTES) continue;
    const next = cut();
    if (pending) yield await pending;
    pending = next;
  }
  if (gatheredBytes > 0 || frames === 0) {
    const next = cut();
    if (pending) yield await pending;
    pending = next;
  }
  if (pending) yield await pending;
}

/**
 * An incremental zstd decoder for one upload: push() the compressed bytes as they come and
 * write out what it yields, end() when the client says it has finished. It yields pieces of
 * about a MiB at most, however small the input, and refuses output beyond `expectedBytes` (a
 * digest's size) at once, so memory stays bounded and a zstd bomb costs nothing.
 */
export class ZstdDecoder {
  private readonly scanner = new ZstdFrameScanner();
  private readonly decoder: Decompress;
  private out: Uint8Array[] = [];
  compressedBytes = 0;
  decompressedBytes = 0;

  constructor(
    private readonly expectedBytes: number,
    /** What is being decoded, for messages: "blob abc…/123". */
    private readonly what: string,
  ) {
    this.decoder = new Decompress((chunk) => {
      if (chunk.byteLength > 0) this.out.push(chunk);
    });
  }

  *push(compressed: Uint8Array): Generator<Uint8Array> {
    this.compressedBytes += compressed.byteLength;
    // Cut the input after every frame, and after blocks that could regenerate a slice's worth.
    const cuts: number[] = [];
    let bound = 0;
    this.guard(() =>
      this.scanner.scan(compressed, (end, outputBound, frameEnd) => {
        bound += outputBound;
        if (frameEnd || bound >= DECODE_SLICE_BYTES) {
          cuts.push(end);
          bound = 0;
        }
      }),
    );
    cuts.push(compressed.byteLength);
    let start = 0;
    for (const end of cuts) {
      if (end <= start) continue;
      const piece = compressed.subarray(start, end);
      start = end;
      this.guard(() => this.decoder.push(piece, false));
      yield* this.take();
    }
  }

  /** The stream is complete: yields what is left, or throws if it stops inside a frame. */
  *end(): Generator<Uint8Array> {
    if (!this.scanner.atFrameBoundary) {
      throw invalidArgument(`${this.what}: the zstd data ends in the middle of a frame, after ${this.compressedBytes} compressed bytes`);
    }
    if (this.scanner.frames > 0) this.guard(() => this.decoder.push(new Uint8Array(0), true));
    yield* this.take();
  }

  private *take(): Generator<Uint8Array> {
    const pieces = this.out;
    this.out = [];
    for (const p of pieces) {
      this.decompressedBytes += p.byteLength;
      if (this.decompressedBytes > this.expectedBytes) {
        throw invalidArgument(`${this.what}: the zstd data decompresses to more than the ${this.expectedBytes} bytes expected`);
      }
      yield p;
    }
  }

  private guard(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      if (err instanceof StatusError) throw err.withContext(this.what);
      throw invalidArgument(`${this.what}: not a valid zstd stream: ${(err as Error).message}`);
    }
  }
}

/** A whole zstd-compressed blob (a batch entry), decoded with the same bounds. */
export function decompressBlob(compressed: Uint8Array, expectedBytes: number, what: string): Buffer {
  const decoder = new ZstdDecoder(expectedBytes, what);
  const parts = [...decoder.push(compressed), ...decoder.end()];
  return Buffer.concat(parts);
}
