import { ForwardingBlobStore, type BlobStore } from '../cas/blob-store.js';
import type { Digest } from '../digest/digest.js';
import type { StoreMetrics } from './store-metrics.js';

/** Counts CAS lookups that find their blob and those that do not. */
export class MeteredBlobStore extends ForwardingBlobStore {
  constructor(
    base: BlobStore,
    private readonly metrics: StoreMetrics,
  ) {
    super(base);
  }

  override async findMissing(digests: readonly Digest[]): Promise<Digest[]> {
    const missing = await this.base.findMissing(digests);
    this.metrics.recordCasLookups('find_missing', digests.length - missing.length, missing.length);
    return missing;
  }

  override async get(digest: Digest): Promise<Buffer | undefined> {
    const data = await this.base.get(digest);
    this.metrics.recordCasLookups('read', data ? 1 : 0, data ? 0 : 1);
    return data;
  }

  override async read(digest: Digest, offset: number, limit: number): Promise<AsyncIterable<Uint8Array> | undefined> {
    const stream = await this.base.read(digest, offset, limit);
    this.metrics.recordCasLookups('read', stream ? 1 : 0, stream ? 0 : 1);
    return stream;
  }
}
