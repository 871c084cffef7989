import { invalidArgument } from '../util/status-error.js';

/**
 * A walker over the frame and block structure of a zstd stream (RFC 8878), without decoding
 * it. It tells the decoder where blocks and frames end and how many bytes each block can
 * produce at most, so that the decoder is fed pieces whose output is bounded: a few bytes of
 * RLE blocks can stand for gigabytes. It also refuses what reexec never decodes: reserved
 * bits, dictionaries, windows above 8 MiB.
 */

const ZSTD_MAGIC = 0xfd2fb528;
const SKIPPABLE_MAGIC = 0x184d2a50; // …5f: the low four bits are free
/** A block never regenerates more than this (Block_Maximum_Size is at most 128 KiB). */
export const MAX_BLOCK_OUTPUT = 128 * 1024;
/**
 * The largest window decoded: 8 MiB, what zstd levels 1-19 use at most (Bazel's zstd-jni: level
 * 3, 2 MiB); only levels 20-22 and --long go further. The decoder keeps a window this size per
 * stream and moves it for every block, so a larger one would let a few bytes of RLE blocks
 * cost milliseconds each.
 */
export const MAX_WINDOW_BYTES = 8 * 1024 * 1024;

type State = 'magic' | 'descriptor' | 'header' | 'blockHeader' | 'blockBody' | 'checksum' | 'skipSize' | 'skipBody';

/** Called after each block (its output bound) and at each frame's end. `end` is an index into the scanned chunk. */
export type ScanMark = (end: number, outputBound: number, frameEnd: boolean) => void;

export class ZstdFrameScanner {
  private state: State = 'magic';
  /** Header bytes gathered so far, and how many the current header needs. */
  private readonly head = Buffer.alloc(16);
  private headLen = 0;
  private headNeed = 4;
  private descriptor = 0;
  /** Bytes of a block body, checksum or skippable frame still to pass. */
  private remaining = 0;
  private blockOutput = 0;
  private lastBlock = false;
  private hasChecksum = false;
  /** Complete frames seen, skippable ones included. */
  frames = 0;

  /** Between frames (or before the first): where a zstd stream may end. */
  get atFrameBoundary(): boolean {
    return this.state === 'magic' && this.headLen === 0;
  }

  scan(data: Uint8Array, mark: ScanMark): void {
    let i = 0;
    while (i < data.length) {
      if (this.state === 'blockBody' || this.state === 'checksum' || this.state === 'skipBody') {
        const take = Math.min(this.remaining, data.length - i);
        i += take;
        this.remaining -= take;
        if (this.remaining === 0) this.bodyDone(i, mark);
        continue;
      }
      // Header states: gather headNeed bytes, then interpret them.
      const take = Math.min(this.headNeed - this.headLen, data.length - i);
      this.head.set(data.subarray(i, i + take), this.headLen);
      this.headLen += take;
      i += take;
      if (this.headLen < this.headNeed) break;
      this.headLen = 0;
      this.headerDone(i, mark);
    }
  }

  private headerDone(at: number, mark: ScanMark): void {
    const h = this.head;
    switch (this.state) {
      case 'magic': {
        const magic = h.readUInt32LE(0);
        if (magic === ZSTD_MAGIC) return this.expect('descriptor', 1);
        if ((magic & 0xfffffff0) >>> 0 === SKIPPABLE_MAGIC) return this.expect('skipSize', 4);
        throw corrupt(`expected a zstd frame, found the bytes ${h.subarray(0, 4).toString('hex')} (zstd frames start with 28b52ffd)`);
      }
      case 'descriptor': {
        const d = (this.descriptor = h[0]!);
        if (d & 0x08) throw corrupt('a frame header sets the reserved bit');
        const singleSegment = (d >> 5) & 1;
        const fcsFlag = d >> 6;
        const dictFlag = d & 3;
        const rest = (singleSegment ? 0 : 1) + [0, 1, 2, 4][dictFlag]! + (fcsFlag === 0 ? singleSegment : 1 << fcsFlag);
        this.hasChecksum = ((d >> 2) & 1) === 1;
        if (rest === 0) return this.expect('blockHeader', 3);
        return this.expect('header', rest);
      }
      case 'header': {
        const d = this.descriptor;
        const singleSegment = (d >> 5) & 1;
        const dictBytes = [0, 1, 2, 4][d & 3]!;
        let pos = 0;
        let window = 0;
        if (!singleSegment) {
          const wd = h[pos++]!;
          const base = 2 ** (10 + (wd >> 3));
          window = base + (base / 8) * (wd & 7);
        }
        let dictId = 0;
        for (let k = 0; k < dictBytes; k++) dictId += h[pos + k]! * 2 ** (8 * k);
        pos += dictBytes;
        if (dictId !== 0) throw corrupt(`a frame needs dictionary ${dictId}: this server decodes no dictionaries`);
        if (singleSegment) {
          // The window is the content size (1, 2, 4 or 8 bytes; the 2-byte form is offset by 256).
          const fcsBytes = this.headNeed - pos;
          let fcs = 0;
          for (let k = 0; k < fcsBytes; k++) fcs += h[pos + k]! * 2 ** (8 * k);
          window = fcsBytes === 2 ? fcs + 256 : fcs;
        }
        if (window > MAX_WINDOW_BYTES) {
          throw corrupt(`a frame asks for a ${window}-byte window, more than the ${MAX_WINDOW_BYTES} this server decodes (zstd levels up to 19, without --long)`);
        }
        return this.expect('blockHeader', 3);
      }
      case 'blockHeader': {
        const v = h[0]! | (h[1]! << 8) | (h[2]! << 16);
        this.lastBlock = (v & 1) === 1;
        const type = (v >> 1) & 3;
        const size = v >>> 3;
        if (type === 3) throw corrupt('a block has the reserved type 3');
        if (size > MAX_BLOCK_OUTPUT) throw corrupt(`a block declares ${size} bytes, more than zstd's ${MAX_BLOCK_OUTPUT}`);
        this.blockOutput = type === 2 ? MAX_BLOCK_OUTPUT : size;
        this.remaining = type === 1 ? 1 : size;
        this.state = 'blockBody';
        if (this.remaining === 0) this.bodyDone(at, mark);
        return;
      }
      case 'skipSize': {
        this.remaining = h.readUInt32LE(0);
        this.state = 'skipBody';
        if (this.remaining === 0) this.bodyDone(at, mark);
        return;
      }
      default:
        throw new Error(`zstd scanner: no header in state ${this.state}`);
    }
  }

  private bodyDone(at: number, mark: ScanMark): void {
    if (this.state === 'blockBody') {
      mark(at, this.blockOutput, false);
      if (!this.lastBlock) return this.expect('blockHeader', 3);
      if (this.hasChecksum) {
        this.state = 'checksum';
        this.remaining = 4;
        return;
      }
    }
    // The end of a frame: its last block (and checksum), or a skippable frame's body.
    this.frames++;
    this.expect('magic', 4);
    mark(at, 0, true);
  }

  private expect(state: State, bytes: number): void {
    this.state = state;
    this.headNeed = bytes;
    this.headLen = 0;
  }
}

function corrupt(what: string): Error {
  return invalidArgument(`not a valid zstd stream: ${what}`);
}
