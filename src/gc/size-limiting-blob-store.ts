import { ForwardingBlobStore, type BlobStore, type BlobWriter, type StoreCallOptions } from '../cas/blob-store.js';
import type { StoreUsage } from '../cas/local-blob-store.js';
import type { Digest } from '../digest/digest.js';
import type { DiskSpace } from '../store/disk-space.js';
import { resourceExhausted } from '../util/status-error.js';
import { BLOB_OVERHEAD_BYTES, formatBytes } from './storage-budget.js';

export interface SizeLimits {
  /** Writes that would take the CAS past this many blob bytes are refused. */
  hardLimitBytes: number;
  /** Writes that would leave the file system with less free space than this are refused (0: off). */
  minFreeBytes: number;
}

export interface SizeLimitingOptions {
  /** Committed blob bytes (LmdbBlobStore.usage). */
  usage: () => StoreUsage;
  /**
   * The file system holding the store: its free space (measured at most every freeSpaceCacheMs),
   * the headroom kept for deletions and whether the disk reserve is in place.
   */
  space?: DiskSpace;
  /** How stale that measurement may be (default: DiskSpace's). */
  freeSpaceCacheMs?: number;
  /** Where the limits come from, for the message ("storage.hard-limit in /etc/reexec.yaml"). */
  configHint?: string;
  /** What each blob counts beyond its bytes (default BLOB_OVERHEAD_BYTES). */
  perBlobOverhead?: number;
  /**
   * Why eviction cannot make room now, if it cannot (everything is within the grace period or
   * needed by queued actions): a sentence for the message, from the last collection.
   */
  whyNothingEvictable?: () => string | undefined;
}

/**
 * The hard limit: a write that would take the CAS past it, or leave the disk with less free
 * space than the configured minimum, fails with RESOURCE_EXHAUSTED naming the limit and what
 * to do, before any byte is stored. BatchUpdateBlobs reports it per blob, which BuildStream
 * reads as "cache full, skip" and Bazel as a warning: builds carry on, the disk never fills.
 * Bytes of uploads in progress count as used, so concurrent streams cannot overshoot together.
 */
export class SizeLimitingBlobStore extends ForwardingBlobStore {
  /** Budget bytes (size + per-blob overhead) of uploads in flight. */
  private reserved = 0;
  /** Disk bytes uploads in flight may take: whole LMDB pages or file-system blocks, and an index page. */
  private reservedDisk = 0;

  constructor(
    base: BlobStore,
    private readonly limits: SizeLimits,
    private readonly options: SizeLimitingOptions,
  ) {
    super(base);
  }

  /** Bytes of writes accepted and not yet committed or aborted. */
  get reservedBytes(): number {
    return this.reserved;
  }

  /** Throws RESOURCE_EXHAUSTED when `digest` does not fit; else reserves what it counts and returns the release. */
  private async reserve(digest: Digest, options?: StoreCallOptions): Promise<() => void> {
    if (digest.sizeBytes === 0) return () => undefined;
    const overhead = this.options.perBlobOverhead ?? BLOB_OVERHEAD_BYTES;
    const size = digest.sizeBytes + overhead;
    // What it may take of the disk until it is stored: whole pages (LMDB) or blocks (files),
    // and a page of index for its record.
    const disk = Math.ceil((digest.sizeBytes + 64) / 4096) * 4096 + 4096;
    const { space } = this.options;
    const freeBytes = space ? space.measure(this.options.freeSpaceCacheMs).freeBytes : Infinity;
    // Uploads keep out of the headroom kept for deletions, and leave room to re-create the
    // disk reserve if a collection had to use it.
    const keepFree = Math.max(this.limits.minFreeBytes, space?.headroomBytes ?? 0) + (space && !space.reservePresent ? space.reserveBytes : 0);
    const usage = this.options.usage();
    const used = usage.bytes + usage.count * overhead;
    const overLimit = used + this.reserved + size > this.limits.hardLimitBytes;
    // Free space shrinks only when writes land: what is reserved is not yet gone from it.
    const overDisk = freeBytes - this.reservedDisk - disk < keepFree;
    if (overLimit || overDisk) {
      // Storing a blob the CAS already has costs nothing: let it through (it refreshes the blob).
      if ((await this.base.findMissing([digest], options)).length === 0) return () => undefined;
      const hint = this.options.configHint ?? 'the config';
      const stuck = this.options.whyNothingEvictable?.();
      if (overLimit) {
        throw resourceExhausted(
          `the cache is full: it holds ${formatBytes(used)}${this.reserved ? ` (+ ${formatBytes(this.reserved)} being uploaded)` : ''}, and blob ${digest} (${formatBytes(digest.sizeBytes)}) would take it past its hard limit of ${formatBytes(this.limits.hardLimitBytes)}. ` +
            (stuck ?? 'Eviction of least-recently-used blobs is running: retry later, or free space now with `reexec gc --target SIZE`') +
            `; or raise storage.max-bytes / storage.hard-limit in ${hint}`,
        );
      }
      const where = space ? `the file system holding the data dir ${space.dataDir}` : 'the disk holding the cache';
      const limit =
        this.limits.minFreeBytes >= (space?.headroomBytes ?? 0)
          ? `storage.min-free-disk (${formatBytes(this.limits.minFreeBytes)})`
          : `the ${formatBytes(keepFree)} kept free for deletions and the disk reserve (storage.disk-reserve${space && !space.reservePresent ? ', now released: it is re-created before uploads resume' : ''})`;
      throw resourceExhausted(
        `${where} is nearly full: ${formatBytes(Math.max(0, freeBytes))} free, and blob ${digest} (${formatBytes(digest.sizeBytes)}) would leave less than ${limit}. ` +
          (stuck ? `${stuck}; or free` : 'reexec evicts least-recently-used blobs to make room: retry later, or free') +
          ` space on that file system, or lower storage.max-bytes in ${hint}`,
      );
    }
    this.reserved += size;
    this.reservedDisk += disk;
    let held = true;
    return () => {
      if (held) {
        this.reserved -= size;
        this.reservedDisk -= disk;
      }
      held = false;
    };
  }

  override async put(digest: Digest, data: Uint8Array, options?: StoreCallOptions): Promise<void> {
    const release = await this.reserve(digest, options);
    try {
      await this.base.put(digest, data, options);
    } finally {
      release();
    }
  }

  override async beginWrite(digest: Digest, options?: StoreCallOptions): Promise<BlobWriter> {
    const release = await this.reserve(digest, options);
    let writer: BlobWriter;
    try {
      writer = await this.base.beginWrite(digest, options);
    } catch (err) {
      release();
      throw err;
    }
    return {
      get written() {
        return writer.written;
      },
      write: (chunk) => writer.write(chunk),
      commit: async () => {
        try {
          await writer.commit();
        } finally {
          release();
        }
      },
      abort: async () => {
        try {
          await writer.abort();
        } finally {
          release();
        }
      },
    };
  }
}
