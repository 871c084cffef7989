import { ForwardingBlobStore, type BlobStore, type StoreCallOptions } from '../cas/blob-store.js';
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

  override async findMissing(digests: readonly Digest[], options?: StoreCallOptions): Promise<Digest[]> {
    const missing = await this.base.findMissing(digests, options);
    this.metrics.recordCasLookups('find_missing', digests.length - missing.length, missing.length);
    return missing;
  }

  override async get(digest: Digest, options?: StoreCallOptions): Promise<Buffer | undefined> {
    const data = await this.base.get(digest, options);
    this.metrics.recordCasLookups('read', data ? 1 : 0, data ? 0 : 1);
    return data;
  }

  override async read(digest: Digest, offset: number, limit: number, options?: StoreCallOptions): Promise<AsyncIterable<Uint8Array> | undefined> {
    const stream = await this.base.read(digest, offset, limit, options);
    this.metrics.recordCasLookups('read', stream ? 1 : 0, stream ? 0 : 1);
    return stream;
  }
}
