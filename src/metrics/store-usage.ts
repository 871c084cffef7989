import { statfs } from 'node:fs/promises';

export interface StoreSizes {
  /** Blobs in the CAS. */
  casBlobs: number;
  /** Bytes of those blobs (their sizes, not disk usage). */
  casBytes: number;
  bytesMeasuredAt: number;
  /** Action cache entries. */
  acEntries: number;
  /** The file system holding the data dir (measured every few seconds). */
  disk: { totalBytes: number; freeBytes: number } | null;
}

/**
 * How full the store is, cheap enough to read on every scrape and every status poll: the
 * CAS's own running totals, the action cache's entry count, and the data dir's file
 * system (statfs, refreshed in the background at most every `diskIntervalMs`).
 */
export class StoreUsageSampler {
  private disk: StoreSizes['disk'] = null;
  private diskAt = 0;
  private diskRead: Promise<void> | undefined;
  private closed = false;

  constructor(
    private readonly dataDir: string,
    /** The CAS's blob count and bytes (LmdbBlobStore.usage). */
    private readonly cas: () => { count: number; bytes: number },
    /** Action cache entries (LmdbActionCache.entries). */
    private readonly acEntries: () => number,
    private readonly diskIntervalMs = 5000,
  ) {
    this.refreshDisk();
  }

  usage(): StoreSizes {
    this.refreshDisk();
    const cas = this.closed ? { count: 0, bytes: 0 } : this.cas();
    return { casBlobs: cas.count, casBytes: cas.bytes, bytesMeasuredAt: Date.now(), acEntries: this.closed ? 0 : this.acEntries(), disk: this.disk };
  }

  private refreshDisk(): void {
    if (this.diskRead || this.closed || Date.now() - this.diskAt < this.diskIntervalMs) return;
    this.diskRead = statfs(this.dataDir)
      .then(
        (fs) => void (this.disk = { totalBytes: fs.blocks * fs.bsize, freeBytes: fs.bavail * fs.bsize }),
        () => void (this.disk = null),
      )
      .finally(() => {
        this.diskAt = Date.now();
        this.diskRead = undefined;
      });
  }

  /** Stop reading (the daemon is closing the environment). */
  async close(): Promise<void> {
    this.closed = true;
    await this.diskRead;
  }
}
