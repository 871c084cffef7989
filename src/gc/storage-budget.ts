import { fileSystemBytes } from '../store/disk-space.js';
import { ConfigError, type Config, type SizeOrShare } from '../config/config.js';
import { formatBytes } from '../util/format-bytes.js';

export { formatBytes };

/**
 * What a blob costs on disk beyond its bytes, counted against the budget: its index record and,
 * inline, its LMDB entry (about 900 bytes per 100-byte blob, measured: B-tree pages of random
 * keys are part-filled), or, as a file, half a file-system block on average. Without it, a
 * store of small blobs would take several times its budget on disk.
 */
export const BLOB_OVERHEAD_BYTES = 1024;

/** The storage settings of the config, resolved to bytes for the file system the data dir is on. */
export interface StorageBudget {
  /** The budget: what the CAS is kept under. */
  maxBytes: number;
  /** Background eviction starts above this… */
  highBytes: number;
  /** …and stops at this. */
  lowBytes: number;
  /** Uploads that would take the CAS past this fail with RESOURCE_EXHAUSTED. */
  hardLimitBytes: number;
  /** Uploads that would leave less free space than this on the file system fail too (0: off). */
  minFreeBytes: number;
  /** The disk reserve and headroom kept for deletions (DiskSpace). */
  reserveBytes: number;
  /** Blobs used this recently are never evicted. */
  graceSeconds: number;
  /** Bound of remote execution's staging cache. */
  stagingCacheBytes: number;
}

const resolve = (v: SizeOrShare, of: number): number => ('bytes' in v ? v.bytes : Math.floor(v.share * of));

/** The budget for a file system of `fsBytes` bytes, checked for consistency. */
export function resolveBudget(storage: Config['storage'], fsBytes: number): StorageBudget {
  const maxBytes = resolve(storage.maxBytes, fsBytes);
  const budget: StorageBudget = {
    maxBytes,
    highBytes: resolve(storage.highWatermark, maxBytes),
    lowBytes: resolve(storage.lowWatermark, maxBytes),
    hardLimitBytes: resolve(storage.hardLimit, maxBytes),
    minFreeBytes: resolve(storage.minFreeDisk, fsBytes),
    reserveBytes: storage.diskReserve === 'auto' ? autoReserve(fsBytes) : resolve(storage.diskReserve, fsBytes),
    graceSeconds: storage.gracePeriodSeconds,
    stagingCacheBytes: resolve(storage.stagingCacheMaxBytes, maxBytes),
  };
  const { lowBytes, highBytes, hardLimitBytes } = budget;
  if (!(lowBytes < highBytes)) {
    throw new ConfigError(`storage: low-watermark (${formatBytes(lowBytes)}) must be below high-watermark (${formatBytes(highBytes)})`);
  }
  if (hardLimitBytes < highBytes) {
    throw new ConfigError(`storage: hard-limit (${formatBytes(hardLimitBytes)}) must not be below high-watermark (${formatBytes(highBytes)}): eviction would never start before writes fail`);
  }
  return budget;
}

/**
 * The default disk reserve: 5 % of the file system in whole MiB, at least 4 MiB and at most
 * 64 MiB. An eviction commits at most a thousand index records at a time (a few MiB of LMDB
 * pages at worst; 200 when the disk is nearly full).
 */
export function autoReserve(fsBytes: number): number {
  const mib = 1024 * 1024;
  return Math.min(64 * mib, Math.max(4 * mib, Math.floor((fsBytes * 0.05) / mib) * mib));
}

export { fileSystemBytes };

/** The budget for the file system the data dir is on. */
export async function resolveStorageBudget(config: Pick<Config, 'storage' | 'dataDir'>): Promise<StorageBudget> {
  return resolveBudget(config.storage, (await fileSystemBytes(config.dataDir)).totalBytes);
}

/**
 * How stale a blob's access time may get before a read refreshes it. Below the grace period,
 * so that a blob used within it always carries a time within it: the collector, which reads
 * only access times, then never takes a blob a client was just told exists.
 */
export function touchIntervalFor(graceSeconds: number): number {
  return Math.max(1, Math.min(600, Math.floor(graceSeconds / 2)));
}
