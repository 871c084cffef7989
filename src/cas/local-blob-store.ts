import type { Digest } from '../digest/digest.js';

/**
 * What the local CAS offers beyond BlobStore, to the parts that work on the data dir itself:
 * the garbage collector (usage, index scan, eviction, orphan files, access times) and the input
 * stager (a blob's file, to hard-link). LmdbBlobStore implements it; nothing above storage/
 * names LmdbBlobStore.
 */
export interface LocalBlobStore {
  /** Blob bytes and count, as last committed. */
  usage(): StoreUsage;
  /** The index record of a blob (its size must match), or undefined. */
  record(digest: Digest): BlobRecord | undefined;
  /** Up to `limit` index entries after key `after`, in key order. */
  scan(after: string | undefined, limit: number): IndexEntry[];
  /** Delete the candidates that are still evictable (checked in the deleting transaction). */
  evict(candidates: readonly IndexEntry[], stillEvictable: (entry: IndexEntry) => boolean): Promise<StoreUsage>;
  /** Remove files under blobs/ that no record names (left by a crash). */
  removeOrphanFiles(): Promise<{ files: number; bytes: number }>;
  /** The file holding a blob, when it is stored as a file (not inline). */
  localFile(digest: Digest): string | undefined;
}

/** What the index knows of a stored blob. Kept small: it is read on every FindMissingBlobs. */
export interface BlobRecord {
  /** Size in bytes. */
  s: number;
  /** 1 when the bytes live in a file under blobs/, 0 when inline in LMDB. */
  f: 0 | 1;
  /** Last access, seconds since the epoch (coarse: refreshed at most every touchIntervalSeconds). */
  t: number;
}

/** What the CAS holds: blob bytes (their sizes, not disk usage) and blob count. */
export interface StoreUsage {
  bytes: number;
  count: number;
}

/** A blob as an index scan sees it: the garbage collector's unit. */
export interface IndexEntry extends BlobRecord {
  /** The index key: Digest.key ("sha256:abc…"). */
  key: string;
}

