import { ForwardingBlobStore, type BlobStore, type BlobWriter } from '../cas/blob-store.js';
import type { StoreUsage } from '../cas/lmdb-blob-store.js';
import type { Digest } from '../digest/digest.js';
import { resourceExhausted } from '../util/status-error.js';
import { BLOB_OVERHEAD_BYTES, formatBytes } from './storage-budget.js';

export interface SizeLimits {
  /** Writes that would take the CAS past this many blob bytes are refused. */
  hardLimitBytes: number;
  /** Writes that would leave the file system with less free space than this are refused. */
  minFreeBytes: number;
}

export interface SizeLimitingOptions {
  /** Committed blob bytes (LmdbBlobStore.usage). */
  usage: () => StoreUsage;
  /** Free bytes of the file system holding the store; called at most every freeSpaceCacheMs. */
  freeSpace?: () => Promise<number>;
  freeSpaceCacheMs?: number;
  /** Where the limits come from, for the message ("storage.hard-limit in /etc/reexec.yaml"). */
  configHint?: string;
  /** What each blob counts beyond its bytes (default BLOB_OVERHEAD_BYTES). */
  perBlobOverhead?: number;
}

/**
 * The hard limit: a write that would take the CAS past it, or leave the disk with less free
 * space than the configured minimum, fails with RESOURCE_EXHAUSTED naming the limit and what
 * to do, before any byte is stored. BatchUpdateBlobs reports it per blob, which BuildStream
 * reads as "cache full, skip" and Bazel as a warning: builds carry on, the disk never fills.
 * Bytes of uploads in progress count as used, so concurrent streams cannot overshoot together.
 */
export class SizeLimitingBlobStore extends ForwardingBlobStore {
  private reserved = 0;
  private freeBytes = Infinity;
  private freeCheckedAt = 0;
  private freeRefresh: Promise<void> | undefined;

  constructor(
    base: BlobStore,
    private readonly limits: SizeLimits,
    private readonly options: SizeLimitingOptions,
  ) {
    super(base);
    void this.refreshFreeSpace();
  }

  /** Bytes of writes accepted and not yet committed or aborted. */
  get reservedBytes(): number {
    return this.reserved;
  }

  private refreshFreeSpace(): Promise<void> {
    const { freeSpace } = this.options;
    if (!freeSpace) return Promise.resolve();
    this.freeRefresh ??= freeSpace()
      .then((n) => {
        this.freeBytes = n;
      })
      .catch(() => undefined)
      .finally(() => {
        this.freeCheckedAt = Date.now();
        this.freeRefresh = undefined;
      });
    return this.freeRefresh;
  }

  /** Throws RESOURCE_EXHAUSTED when `digest` does not fit; else reserves (and returns) what it counts. */
  private async reserve(digest: Digest): Promise<number> {
    if (digest.sizeBytes === 0) return 0;
    const overhead = this.options.perBlobOverhead ?? BLOB_OVERHEAD_BYTES;
    const size = digest.sizeBytes + overhead;
    if (Date.now() - this.freeCheckedAt > (this.options.freeSpaceCacheMs ?? 1000)) await this.refreshFreeSpace();
    const usage = this.options.usage();
    const used = usage.bytes + usage.count * overhead;
    const overLimit = used + this.reserved + size > this.limits.hardLimitBytes;
    // Free space shrinks only when writes land: what is reserved is not yet gone from it.
    const overDisk = this.freeBytes - this.reserved - size < this.limits.minFreeBytes;
    if (overLimit || overDisk) {
      // Storing a blob the CAS already has costs nothing: let it through (it refreshes the blob).
      if ((await this.base.findMissing([digest])).length === 0) return 0;
      const hint = this.options.configHint ?? 'the config';
      if (overLimit) {
        throw resourceExhausted(
          `the cache is full: it holds ${formatBytes(used)}${this.reserved ? ` (+ ${formatBytes(this.reserved)} being uploaded)` : ''}, and blob ${digest} (${formatBytes(digest.sizeBytes)}) would take it past its hard limit of ${formatBytes(this.limits.hardLimitBytes)}. ` +
            `Eviction of least-recently-used blobs is running: retry later, or raise storage.max-bytes / storage.hard-limit in ${hint}, or free space now with \`reexec gc --target SIZE\``,
        );
      }
      throw resourceExhausted(
        `the disk holding the cache is nearly full: ${formatBytes(Math.max(0, this.freeBytes))} free, and blob ${digest} (${formatBytes(digest.sizeBytes)}) would leave less than storage.min-free-disk (${formatBytes(this.limits.minFreeBytes)}). ` +
          `Free space on that file system, lower storage.max-bytes in ${hint}, or run \`reexec gc --target SIZE\``,
      );
    }
    this.reserved += size;
    return size;
  }

  override async put(digest: Digest, data: Uint8Array): Promise<void> {
    const reserved = await this.reserve(digest);
    try {
      await this.base.put(digest, data);
    } finally {
      this.reserved -= reserved;
    }
  }

  override async beginWrite(digest: Digest): Promise<BlobWriter> {
    const reserved = await this.reserve(digest);
    let writer: BlobWriter;
    try {
      writer = await this.base.beginWrite(digest);
    } catch (err) {
      this.reserved -= reserved;
      throw err;
    }
    if (!reserved) return writer;
    let held = true;
    const unreserve = (): void => {
      if (held) this.reserved -= reserved;
      held = false;
    };
    return {
      get written() {
        return writer.written;
      },
      write: (chunk) => writer.write(chunk),
      commit: async () => {
        try {
          await writer.commit();
        } finally {
          unreserve();
        }
      },
      abort: async () => {
        try {
          await writer.abort();
        } finally {
          unreserve();
        }
      },
    };
  }
}
