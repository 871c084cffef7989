import { ForwardingBlobStore, type BlobStore, type BlobWriter, type StoreCallOptions } from '../cas/blob-store.js';
import { Digest } from '../digest/digest.js';
import type { Logger } from '../util/logger.js';
import type { UpstreamCas } from './upstream-cas.js';
import type { UpstreamConnection } from './upstream-connection.js';
import type { UpstreamStats } from './upstream-stats.js';
import type { WriteBehindQueue } from './write-behind-queue.js';

/**
 * The CAS in front of an upstream. Reads fall through: a blob missing locally is fetched
 * from the upstream into the local store (written through the local chain, so verified and
 * within the budget; large blobs streamed chunk by chunk), then served from there.
 * FindMissingBlobs reports missing only what neither has: a blob the upstream holds is
 * fetched when it is read. Writes go to the local store first (acknowledged once it holds
 * them), then to the write-behind queue, which uploads them to the upstream.
 *
 * When the upstream is down (or answers an error), a local miss is a miss: nothing waits
 * longer than one call deadline for it.
 */
export class ReadThroughBlobStore extends ForwardingBlobStore {
  /** Fills in progress, by digest key: concurrent readers of one missing blob share one fetch. */
  private readonly filling = new Map<string, Promise<boolean>>();

  constructor(
    local: BlobStore,
    private readonly upstream: UpstreamCas,
    private readonly conn: UpstreamConnection,
    private readonly queue: WriteBehindQueue | undefined,
    private readonly stats: UpstreamStats,
    private readonly log: Logger,
  ) {
    super(local);
  }

  override async findMissing(digests: readonly Digest[], options?: StoreCallOptions): Promise<Digest[]> {
    const missing = await this.base.findMissing(digests, options);
    const askable = missing.filter((d) => this.upstream.supports(d));
    if (askable.length === 0) return missing;
    if (!this.conn.usable) {
      this.stats.cas.upstreamDown += askable.length;
      return missing;
    }
    try {
      const upstreamMissing = new Set((await this.upstream.findMissing(askable, options)).map((d) => d.key));
      return missing.filter((d) => !this.upstream.supports(d) || upstreamMissing.has(d.key));
    } catch (err) {
      this.log.debug(`FindMissingBlobs upstream failed, answering from the local store: ${(err as Error).message}`);
      return missing;
    }
  }

  override async get(digest: Digest, options?: StoreCallOptions): Promise<Buffer | undefined> {
    const local = await this.base.get(digest, options);
    if (local) {
      this.stats.cas.local++;
      return local;
    }
    // A small blob is answered from what the upstream sent once it is verified; keeping it
    // locally (an LMDB commit) goes on behind the answer.
    if (digest.sizeBytes <= this.upstream.batchMax && this.upstream.supports(digest) && this.conn.usable && !this.filling.has(digest.key)) {
      let data: Buffer | undefined;
      try {
        data = await this.upstream.get(digest, options);
      } catch (err) {
        this.stats.fetchErrors++;
        this.log.warn(`fetching ${digest} from the upstream failed: ${(err as Error).message}`);
        return void this.missed();
      }
      if (!data) return void this.missed();
      if (Digest.compute(data, digest.fn).hash !== digest.hash || data.length !== digest.sizeBytes) {
        this.stats.fetchErrors++;
        this.log.warn(`the upstream sent bytes that do not match ${digest}: ignored`);
        return void this.missed();
      }
      this.counted(digest);
      const keep = this.base
        .put(digest, data)
        .then(() => true)
        .catch((err: Error) => {
          this.log.warn(`keeping ${digest} from the upstream failed: ${err.message}`);
          return false;
        })
        .finally(() => this.filling.delete(digest.key));
      this.filling.set(digest.key, keep);
      return data;
    }
    return (await this.fill(digest, options)) ? this.base.get(digest, options) : undefined;
  }

  override async read(digest: Digest, offset: number, limit: number, options?: StoreCallOptions): Promise<AsyncIterable<Uint8Array> | undefined> {
    const local = await this.base.read(digest, offset, limit, options);
    if (local) {
      this.stats.cas.local++;
      return local;
    }
    return (await this.fill(digest, options)) ? this.base.read(digest, offset, limit, options) : undefined;
  }

  override async put(digest: Digest, data: Uint8Array, options?: StoreCallOptions): Promise<void> {
    await this.base.put(digest, data, options);
    this.queue?.addBlob(digest);
  }

  override async beginWrite(digest: Digest, options?: StoreCallOptions): Promise<BlobWriter> {
    const writer = await this.base.beginWrite(digest, options);
    const queue = this.queue;
    return {
      get written() {
        return writer.written;
      },
      write: (chunk) => writer.write(chunk),
      abort: () => writer.abort(),
      commit: async () => {
        await writer.commit();
        queue?.addBlob(digest);
      },
    };
  }

  /** Copy a blob from the upstream into the local store; false when the upstream lacks it (or cannot say). */
  private fill(digest: Digest, options?: StoreCallOptions): Promise<boolean> {
    if (!this.upstream.supports(digest)) {
      this.stats.cas.miss++;
      return Promise.resolve(false);
    }
    if (!this.conn.usable) {
      this.stats.cas.miss++;
      this.stats.cas.upstreamDown++;
      return Promise.resolve(false);
    }
    const running = this.filling.get(digest.key);
    if (running) return running;
    const fill = this.fetchInto(digest, options).finally(() => this.filling.delete(digest.key));
    this.filling.set(digest.key, fill);
    return fill;
  }

  private async fetchInto(digest: Digest, options?: StoreCallOptions): Promise<boolean> {
    try {
      if (digest.sizeBytes <= this.upstream.batchMax) {
        const data = await this.upstream.get(digest, options);
        if (!data) return this.missed();
        await this.base.put(digest, data, options);
      } else {
        const stream = await this.upstream.read(digest, 0, 0, options);
        if (!stream) return this.missed();
        const writer = await this.base.beginWrite(digest, options);
        try {
          for await (const chunk of stream) await writer.write(chunk);
          await writer.commit();
        } catch (err) {
          await writer.abort();
          throw err;
        }
      }
      this.counted(digest);
      return true;
    } catch (err) {
      // Down, a broken stream, bytes that do not match the digest, a full local store: a miss,
      // said in the log (the client's own error would name the local store, not the cause).
      this.stats.fetchErrors++;
      this.log.warn(`fetching ${digest} from the upstream failed: ${(err as Error).message}`);
      return this.missed();
    }
  }

  private counted(digest: Digest): void {
    this.stats.cas.upstream++;
    this.stats.blobsDown++;
    this.stats.bytesDown += digest.sizeBytes;
  }

  private missed(): false {
    this.stats.cas.miss++;
    return false;
  }
}
