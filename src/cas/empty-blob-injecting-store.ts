import type { Digest } from '../digest/digest.js';
import { ForwardingBlobStore, type BlobWriter } from './blob-store.js';

const EMPTY = Buffer.alloc(0);

/**
 * The empty blob is always present, for every digest function: Bazel never uploads it and
 * then asks for stdout by its digest, so a server that reports it missing never gets a hit.
 */
export class EmptyBlobInjectingStore extends ForwardingBlobStore {
  override async findMissing(digests: readonly Digest[]): Promise<Digest[]> {
    const rest = digests.filter((d) => !d.isEmpty);
    return rest.length === 0 ? [] : this.base.findMissing(rest);
  }
  override async get(digest: Digest): Promise<Buffer | undefined> {
    return digest.isEmpty ? EMPTY : this.base.get(digest);
  }
  override async read(digest: Digest, offset: number, limit: number): Promise<AsyncIterable<Uint8Array> | undefined> {
    return digest.isEmpty ? (async function* () {})() : this.base.read(digest, offset, limit);
  }
  override async put(digest: Digest, data: Uint8Array): Promise<void> {
    if (!digest.isEmpty) await this.base.put(digest, data);
  }
  override async beginWrite(digest: Digest): Promise<BlobWriter> {
    if (!digest.isEmpty) return this.base.beginWrite(digest);
    return {
      written: 0,
      write: async () => undefined,
      commit: async () => undefined,
      abort: async () => undefined,
    };
  }
}
