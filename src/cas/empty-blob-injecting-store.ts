import type { Digest } from '../digest/digest.js';
import { ForwardingBlobStore, type BlobWriter, type StoreCallOptions } from './blob-store.js';

const EMPTY = Buffer.alloc(0);

/**
 * The empty blob is always present, for every digest function: Bazel never uploads it and
 * then asks for stdout by its digest, so a server that reports it missing never gets a hit.
 */
export class EmptyBlobInjectingStore extends ForwardingBlobStore {
  override async findMissing(digests: readonly Digest[], options?: StoreCallOptions): Promise<Digest[]> {
    const rest = digests.filter((d) => !d.isEmpty);
    return rest.length === 0 ? [] : this.base.findMissing(rest, options);
  }
  override async get(digest: Digest, options?: StoreCallOptions): Promise<Buffer | undefined> {
    return digest.isEmpty ? EMPTY : this.base.get(digest, options);
  }
  override async read(digest: Digest, offset: number, limit: number, options?: StoreCallOptions): Promise<AsyncIterable<Uint8Array> | undefined> {
    return digest.isEmpty ? (async function* () {})() : this.base.read(digest, offset, limit, options);
  }
  override async put(digest: Digest, data: Uint8Array, options?: StoreCallOptions): Promise<void> {
    if (!digest.isEmpty) await this.base.put(digest, data, options);
  }
  override async beginWrite(digest: Digest, options?: StoreCallOptions): Promise<BlobWriter> {
    if (!digest.isEmpty) return this.base.beginWrite(digest, options);
    return {
      written: 0,
      write: async () => undefined,
      commit: async () => undefined,
      abort: async () => undefined,
    };
  }
}
