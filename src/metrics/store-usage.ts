import { statfs } from 'node:fs/promises';
import type { Database } from 'lmdb';
import type { BlobRecord } from '../cas/lmdb-blob-store.js';
import type { LmdbEnv } from '../store/lmdb-env.js';

export interface StoreUsage {
  /** Blobs in the CAS index (live). */
  casBlobs: number;
  /** Bytes of those blobs, as of bytesMeasuredAt. */
  casBytes: number;
  bytesMeasuredAt: number;
  /** Action cache entries (live). */
  acEntries: number;
  /** The file system holding the data dir. */
  disk: { totalBytes: number; freeBytes: number } | null;
}

/** LMDB's count of a database's entries (mdb_stat: no scan). */
const entries = (db: Database<unknown, string>): number => (db.getStats() as { entryCount?: number }).entryCount ?? 0;

/** Entries read per slice of a scan, between which other work runs. */
const SCAN_SLICE = 5000;

/**
 * How full the store is, read from the LMDB databases the CAS and the action cache keep.
 * Entry counts come from LMDB's own statistics (cheap, always current). The CAS byte total
 * needs a pass over the index: it runs in slices, never more often than every
 * `minIntervalMs` nor taking more than a tenth of the time, so a big store costs the daemon
 * little; in between, the last total is reported with the time it was measured.
 */
export class StoreUsageSampler {
  private readonly casIndex: Database<BlobRecord, string>;
  private readonly ac: Database<Buffer, string>;
  private bytes = 0;
  private measuredAt = 0;
  private nextScanAt = 0;
  private scanning: Promise<void> | undefined;
  private disk: StoreUsage['disk'] = null;
  private closed = false;

  constructor(
    env: LmdbEnv,
    private readonly dataDir: string,
    private readonly minIntervalMs = 5000,
  ) {
    // The same named databases LmdbBlobStore and LmdbActionCache open: read-only use here.
    this.casIndex = env.records<BlobRecord>('cas-index');
    this.ac = env.binary('action-cache');
    this.refresh();
  }

  /** The latest figures; starts a new measurement in the background when they are stale. */
  usage(): StoreUsage {
    this.refresh();
    return {
      casBlobs: this.closed ? 0 : entries(this.casIndex),
      casBytes: this.bytes,
      bytesMeasuredAt: this.measuredAt,
      acEntries: this.closed ? 0 : entries(this.ac),
      disk: this.disk,
    };
  }

  /** Resolves once a measurement that started after this call has finished. */
  async measureNow(): Promise<StoreUsage> {
    await this.scanning;
    this.nextScanAt = 0;
    this.refresh();
    await this.scanning;
    return this.usage();
  }

  private refresh(): void {
    if (this.scanning || this.closed || Date.now() < this.nextScanAt) return;
    this.scanning = this.scan().finally(() => (this.scanning = undefined));
  }

  private async scan(): Promise<void> {
    const started = Date.now();
    let busyMs = 0;
    let total = 0;
    let last: string | undefined;
    for (;;) {
      if (this.closed) return;
      const sliceStart = Date.now();
      let got = 0;
      for (const { key, value } of this.casIndex.getRange({ start: last, limit: SCAN_SLICE + 1 })) {
        if (key === last) continue;
        total += value?.s ?? 0;
        last = key;
        got++;
      }
      busyMs += Date.now() - sliceStart;
      if (got === 0) break;
      await new Promise((r) => setImmediate(r));
    }
    try {
      const fs = await statfs(this.dataDir);
      this.disk = { totalBytes: fs.blocks * fs.bsize, freeBytes: fs.bavail * fs.bsize };
    } catch {
      this.disk = null;
    }
    this.bytes = total;
    this.measuredAt = started;
    this.nextScanAt = Date.now() + Math.max(this.minIntervalMs, busyMs * 10);
  }

  /** Stop measuring (the daemon is closing the environment). */
  async close(): Promise<void> {
    this.closed = true;
    await this.scanning;
  }
}
