import type { StoreUsage } from '../cas/local-blob-store.js';
import type { Digest } from '../digest/digest.js';
import type { DiskSpace } from '../store/disk-space.js';
import type { Logger } from '../util/logger.js';
import { GarbageCollector, type CollectableStore, type GcProgress, type GcRequest, type GcSummary } from './garbage-collector.js';
import type { GcRun } from './gc-run.js';
import type { InUseDigests } from './in-use-digests.js';
import { StagingCacheSweeper, type StagingSweepResult } from './staging-cache-sweeper.js';
import { BLOB_OVERHEAD_BYTES, formatBytes, type StorageBudget } from './storage-budget.js';
import { systemClock, type Clock } from '../util/clock.js';

/** What the storage GC needs of the CAS (LmdbBlobStore). */
export interface GcStore extends CollectableStore {
  removeOrphanFiles(): Promise<{ files: number; bytes: number }>;
  record(digest: Digest): { t: number } | undefined;
}

/** The outcome of one collection, as `reexec gc` shows it and the Admin API sends it. */
export interface GcRunSummary extends GcSummary {
  reason: 'requested' | 'high watermark';
  /** Files under blobs/ without a record (left by a crash), removed. */
  orphanFiles: { files: number; bytes: number };
  stagingCache?: StagingSweepResult;
  budget: Pick<StorageBudget, 'maxBytes' | 'highBytes' | 'lowBytes' | 'hardLimitBytes' | 'graceSeconds'>;
  /** The disk reserve, when it was not in place during the collection (the file system was full): whether it is back. */
  diskReserve?: { released: boolean; present: boolean; bytes: number };
}

export interface StorageGcOptions {
  store: GcStore;
  budget: StorageBudget;
  /** DATA/cache, remote execution's staging cache; undefined: not swept. */
  cacheDir?: string;
  inUse?: InUseDigests;
  log: Logger;
  /** How often the background checks the CAS against the high watermark. */
  pollMs?: number;
  /** How often the background measures the staging cache. */
  stagingSweepMs?: number;
  /** Where time comes from: the grace period, retries (default: the system clock). */
  clock?: Clock;
  /** Told of every collection (metrics, status). */
  onRun?: (run: GcRun) => void;
  /**
   * The file system holding the store. When others fill the disk to below min-free-disk (or
   * into the headroom kept for deletions), uploads are refused; the background then evicts to
   * make room, as a cache should rather than stop caching, and re-creates the disk reserve.
   */
  space?: DiskSpace;
}

/**
 * Everything that keeps the data dir within its budget: least-recently-used eviction of the CAS
 * (in the background from the high to the low watermark, or on request), removal of orphan
 * blob files, and the staging cache's bound. One collection runs at a time.
 */
export class StorageGc {
  private readonly collector: GarbageCollector;
  private readonly sweeper?: StagingCacheSweeper;
  private chain: Promise<unknown> = Promise.resolve();
  private readonly abort = new AbortController();
  private timers: NodeJS.Timeout[] = [];
  private backgroundBusy = false;
  /** After a background run that could free nothing, wait before trying again (and warn once). */
  private retryAfter = 0;
  /** What the last collection could not take, when it fell short of its target (for messages). */
  private stuck: Pick<GcSummary, 'keptRecent' | 'keptInUse'> | undefined;

  private readonly clock: Clock;

  constructor(private readonly options: StorageGcOptions) {
    this.clock = options.clock ?? systemClock;
    const isInUse = (key: string): boolean => options.inUse?.has(key) ?? false;
    const space = options.space;
    this.collector = new GarbageCollector(options.store, {
      graceSeconds: options.budget.graceSeconds,
      isInUse,
      clock: options.clock,
      perBlobOverhead: BLOB_OVERHEAD_BYTES,
      lowOnSpace: space ? () => space.freeBytes < 2 * space.headroomBytes : undefined,
    });
    if (options.cacheDir) {
      this.sweeper = new StagingCacheSweeper(options.cacheDir, { isInUse, lastUsed: (d) => options.store.record(d)?.t ?? 0 });
    }
  }

  usage(): StoreUsage {
    return this.options.store.usage();
  }

  /** What the CAS counts against its budget: blob bytes plus BLOB_OVERHEAD_BYTES per blob. */
  footprint(): number {
    return this.collector.footprint(this.options.store.usage());
  }

  /** Background work: eviction past the high watermark, the staging cache's bound, orphan files. */
  start(): void {
    const { pollMs = 1000, stagingSweepMs = 10 * 60_000 } = this.options;
    this.timers.push(setInterval(() => this.poll(), pollMs));
    if (this.sweeper) this.timers.push(setInterval(() => void this.sweepStagingCache(), stagingSweepMs));
    for (const t of this.timers) t.unref();
    // Crash leftovers first; the store serves meanwhile.
    void this.exclusive(async () => {
      const orphans = await this.options.store.removeOrphanFiles();
      if (orphans.files) this.options.log.info(`removed ${orphans.files} orphan blob file(s) (${formatBytes(orphans.bytes)}) left by an interrupted run`);
    }).catch((err: Error) => this.options.log.warn(`could not look for orphan blob files: ${err.message}`));
    this.poll();
  }

  async stop(): Promise<void> {
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    this.abort.abort();
    await this.chain.catch(() => undefined);
  }

  /**
   * A collection on request: down to targetBytes (default: the low watermark, unless only an
   * age limit is asked for), plus orphan files and the staging cache.
   */
  collect(request: GcRequest, progress?: (p: GcProgress) => void | Promise<void>): Promise<GcRunSummary> {
    return this.exclusive(async () => {
      const { budget } = this.options;
      const req: GcRequest = { ...request, targetBytes: request.targetBytes ?? (request.maxAgeSeconds === undefined ? budget.lowBytes : undefined) };
      const started = performance.now();
      const reserveBefore = this.options.space?.reservePresent;
      const summary = await this.collector.collect(req, progress, this.abort.signal).catch((err: unknown) => {
        this.report('manual', { freedBlobs: 0, freedBytes: 0, durationMs: performance.now() - started, dryRun: req.dryRun ?? false }, true);
        throw err;
      });
      this.report('manual', summary);
      this.noteShortfall(summary);
      const orphanFiles = req.dryRun ? { files: 0, bytes: 0 } : await this.options.store.removeOrphanFiles();
      let stagingCache: StagingSweepResult | undefined;
      if (this.sweeper) {
        // Emptying the CAS (--target 0) empties the staging cache too; otherwise it is kept to its bound.
        const max = req.targetBytes === 0 ? 0 : budget.stagingCacheBytes;
        stagingCache = await this.sweeper.sweep({ maxBytes: max, targetBytes: Math.floor(max * 0.8), dryRun: req.dryRun });
      }
      const diskReserve = await this.afterCollection(reserveBefore);
      return { ...summary, reason: 'requested' as const, orphanFiles, stagingCache, budget: this.budgetSummary(), ...(diskReserve ? { diskReserve } : {}) };
    });
  }

  /** Re-create the disk reserve if a collection released it; what happened to it, if it was involved. */
  private async afterCollection(reserveBefore: boolean | undefined): Promise<GcRunSummary['diskReserve']> {
    const space = this.options.space;
    if (!space || space.reserveBytes <= 0) return undefined;
    // Released by this collection, or before it (by the daemon, or to write the data dir's lock).
    const released = reserveBefore === false || !space.reservePresent;
    const present = await space.restoreReserve();
    return released || !present ? { released, present, bytes: space.reserveBytes } : undefined;
  }

  /**
   * Why uploads cannot be given room now, when the last collection fell short of its target
   * because everything left is protected; undefined otherwise. Says when the first protected
   * blob becomes evictable, and how an operator can evict anyway.
   */
  whyNothingEvictable(): string | undefined {
    const s = this.stuck;
    if (!s) return undefined;
    const parts: string[] = [];
    if (s.keptRecent.bytes > 0) {
      const at = s.keptRecent.evictableAt;
      const when = at === undefined ? '' : `; the first of them becomes evictable at ${new Date(at * 1000).toISOString()} (in ${Math.max(0, Math.round(at - this.clock.now() / 1000))} s)`;
      parts.push(`${formatBytes(s.keptRecent.bytes)} were used within the grace period (${this.options.budget.graceSeconds} s, storage.grace-period)${when}`);
    }
    if (s.keptInUse.bytes > 0) parts.push(`${formatBytes(s.keptInUse.bytes)} are inputs of queued or running actions`);
    if (parts.length === 0) return undefined;
    return (
      `Eviction cannot make room now: ${parts.join(', and ')}, and those are protected. ` +
      `\`reexec gc --ignore-grace --target SIZE\` evicts blobs inside the grace period anyway (never inputs of queued or running actions)`
    );
  }

  /** Remember what a collection could not take, if it fell short; forget it once one reaches its target. */
  private noteShortfall(s: GcSummary): void {
    if (s.dryRun) return;
    this.stuck = s.reachedTarget ? undefined : { keptRecent: s.keptRecent, keptInUse: s.keptInUse };
  }

  private budgetSummary(): GcRunSummary['budget'] {
    const { maxBytes, highBytes, lowBytes, hardLimitBytes, graceSeconds } = this.options.budget;
    return { maxBytes, highBytes, lowBytes, hardLimitBytes, graceSeconds };
  }

  private poll(): void {
    if (this.backgroundBusy || this.abort.signal.aborted) return;
    const space = this.options.space;
    // Below the headroom the store takes no writes but deletions: worth a check every poll
    // (re-creating the reserve, or evicting sooner) even while waiting to retry.
    const urgent = space !== undefined && (space.critical || !space.reservePresent);
    if (this.clock.now() < this.retryAfter && !urgent) return;
    this.backgroundBusy = true;
    void this.checkAndEvict()
      .catch((err: Error) => this.options.log.error(`background eviction failed: ${err.message}`, { stack: err.stack }))
      .finally(() => (this.backgroundBusy = false));
  }

  /** Free space the data dir's file system should keep: min-free-disk or the headroom, plus the reserve when it is not in place. */
  private wantedFree(space: DiskSpace): number {
    return Math.max(this.options.budget.minFreeBytes, space.headroomBytes) + (space.reservePresent ? 0 : space.reserveBytes);
  }

  private async checkAndEvict(): Promise<void> {
    const { budget, log, space } = this.options;
    const footprint = this.footprint();
    let target: number | undefined;
    if (footprint > budget.highBytes) {
      target = budget.lowBytes;
      log.info(`the CAS holds ${formatBytes(footprint)}, past its high watermark of ${formatBytes(budget.highBytes)}: evicting least-recently-used blobs down to ${formatBytes(budget.lowBytes)}`);
    } else if (space) {
      if (!space.reservePresent && (await space.restoreReserve())) return;
      const { freeBytes: free } = space.measure(0);
      const wanted = this.wantedFree(space);
      if (free < wanted && this.clock.now() >= this.retryAfter) {
        // Make room for the shortfall and as much again as a normal round of eviction frees.
        // Then wait: statfs shows only freed files (LMDB keeps its pages for reuse), and a disk
        // someone else keeps full must not drain the whole cache at once.
        target = Math.max(0, Math.min(budget.lowBytes, footprint - (wanted - free) - (budget.highBytes - budget.lowBytes)));
        // Into the headroom (LMDB takes only deletions): sooner.
        this.retryAfter = this.clock.now() + (free < space.headroomBytes ? 30_000 : 5 * 60_000);
        const why =
          budget.minFreeBytes >= wanted
            ? `less than storage.min-free-disk (${formatBytes(budget.minFreeBytes)})`
            : `less than the ${formatBytes(wanted)} kept free for deletions${space.reservePresent ? '' : ' and to re-create the disk reserve'} (storage.disk-reserve)`;
        log.warn(`the file system holding ${space.dataDir} has ${formatBytes(Math.max(0, free))} free, ${why}: evicting least-recently-used blobs down to ${formatBytes(target)}`);
      }
    }
    if (target === undefined || footprint <= target) return;
    const targetBytes = target;
    const started = performance.now();
    const reserveBefore = space?.reservePresent;
    await this.exclusive(() => this.collector.collect({ targetBytes }, undefined, this.abort.signal))
      .then(async (s) => {
        this.report('auto', s);
        this.noteShortfall(s);
        const after = this.collector.footprint(s.after);
        log.info(`evicted ${s.freedBlobs} blob(s), ${formatBytes(s.freedBytes)} in ${s.durationMs} ms: the CAS holds ${formatBytes(after)}`, {
          freedBlobs: s.freedBlobs,
          freedBytes: s.freedBytes,
          durationMs: s.durationMs,
          casBytes: after,
        });
        if (after > targetBytes && s.freedBlobs === 0) {
          this.retryAfter = this.clock.now() + 60_000;
          log.warn(`the CAS is still above ${formatBytes(targetBytes)} (${formatBytes(after)}), and nothing more can go. ${this.whyNothingEvictable() ?? ''}; trying again in a minute`);
        }
        await this.afterCollection(reserveBefore);
      })
      .catch((err: Error) => {
        this.report('auto', { freedBlobs: 0, freedBytes: 0, durationMs: performance.now() - started, dryRun: false }, true);
        log.error(`background eviction failed: ${err.message}`, { stack: err.stack });
      });
  }

  private report(trigger: 'auto' | 'manual', s: Pick<GcSummary, 'freedBlobs' | 'freedBytes' | 'durationMs' | 'dryRun'>, failed = false): void {
    this.options.onRun?.({
      trigger,
      evictedBlobs: s.freedBlobs,
      evictedBytes: s.freedBytes,
      durationSeconds: s.durationMs / 1000,
      ...(s.dryRun ? { dryRun: true } : {}),
      ...(failed ? { failed: true } : {}),
    });
  }

  private async sweepStagingCache(): Promise<void> {
    const sweeper = this.sweeper;
    if (!sweeper || this.abort.signal.aborted) return;
    const max = this.options.budget.stagingCacheBytes;
    await this.exclusive(() => sweeper.sweep({ maxBytes: max, targetBytes: Math.floor(max * 0.8) }))
      .then((r) => {
        if (r.freedEntries) this.options.log.info(`staging cache: removed ${r.freedEntries} least-recently-used entries (${formatBytes(r.freedBytes)}) of ${formatBytes(r.bytes)}`);
      })
      .catch((err: Error) => this.options.log.warn(`staging cache sweep failed: ${err.message}`));
  }

  /** Run `fn` after every collection queued before it. */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.chain.then(fn, fn);
    this.chain = run.catch(() => undefined);
    return run;
  }
}
