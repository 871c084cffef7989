import { setImmediate as nextTurn } from 'node:timers/promises';
import type { IndexEntry, StoreUsage } from '../cas/local-blob-store.js';
import { systemClock, type Clock } from '../util/clock.js';

/** What the collector needs of a store (LmdbBlobStore). */
export interface CollectableStore {
  usage(): StoreUsage;
  scan(after: string | undefined, limit: number): IndexEntry[];
  evict(candidates: readonly IndexEntry[], stillEvictable: (entry: IndexEntry) => boolean): Promise<StoreUsage>;
}

export interface GcRequest {
  /** Evict least-recently-used blobs until the CAS holds at most this many bytes. */
  targetBytes?: number;
  /** Also evict every blob not used for this long. */
  maxAgeSeconds?: number;
  /** Count what would go; delete nothing. */
  dryRun?: boolean;
  /**
   * Evict blobs used within the grace period too (an operator who means it): inputs of queued
   * and running actions, and uploads in progress, stay.
   */
  ignoreGrace?: boolean;
}

export interface GcProgress {
  phase: 'scanning' | 'evicting';
  /** Index entries looked at in this phase, of `total`. */
  scanned: number;
  total: number;
  /** Bytes this run means to free (what the target and the age limit ask for, as far as allowed). */
  goalBytes: number;
  freedBlobs: number;
  freedBytes: number;
}

export interface GcSummary {
  dryRun: boolean;
  targetBytes?: number;
  maxAgeSeconds?: number;
  /** --ignore-grace: blobs within the grace period were evictable too. */
  ignoredGrace?: boolean;
  before: StoreUsage;
  after: StoreUsage;
  /** Evicted (or, in a dry run, would be). */
  freedBlobs: number;
  freedBytes: number;
  /**
   * Blobs no collection may take (counted when there was something to collect): used within
   * the grace period, the first of which leaves it at `evictableAt` (seconds since the epoch)…
   */
  keptRecent: { blobs: number; bytes: number; evictableAt?: number };
  /** …or inputs of queued and running actions. */
  keptInUse: { blobs: number; bytes: number };
  /** The CAS is at or under targetBytes (always true without one), counting perBlobOverhead. */
  reachedTarget: boolean;
  /** What each blob counts beyond its bytes against targets and the budget. */
  perBlobOverhead: number;
  durationMs: number;
}

export interface GarbageCollectorOptions {
  /** Blobs used this recently are never evicted. */
  graceSeconds: number;
  /** Digest keys that must stay: inputs of queued and running actions. */
  isInUse?: (key: string) => boolean;
  /** Where the grace period's time comes from (default: the system clock). */
  clock?: Clock;
  /** Index entries read per step; other work runs between steps. */
  scanSlice?: number;
  /** Blobs deleted per LMDB transaction. */
  batchSize?: number;
  /** Deletion batches queued at once. */
  maxInFlight?: number;
  /**
   * The file system is nearly full: delete in small transactions, one at a time, so that each
   * commit needs few new LMDB pages (checked at the start of each round).
   */
  lowOnSpace?: () => boolean;
  /**
   * What a blob costs beyond its bytes (index record, inline storage, file-system blocks):
   * targets compare against bytes + count × this, and evicting a blob frees its size plus this.
   */
  perBlobOverhead?: number;
}

/**
 * Distinct access times a histogram holds before it coarsens (seconds → minutes → hours →
 * days): what bounds the collector's memory, whatever the number of blobs.
 */
const MAX_BUCKETS = 50_000;
const RESOLUTIONS = [1, 60, 3600, 86400];

/** Evictable bytes by access time, at the finest resolution that fits in MAX_BUCKETS. */
class AccessHistogram {
  private level = 0;
  private buckets = new Map<number, number>();

  constructor(private readonly fixedResolution?: number) {
    if (fixedResolution) this.level = -1;
  }

  get resolution(): number {
    return this.fixedResolution ?? RESOLUTIONS[this.level]!;
  }

  add(t: number, bytes: number): void {
    const b = Math.floor(t / this.resolution);
    this.buckets.set(b, (this.buckets.get(b) ?? 0) + bytes);
    if (this.buckets.size > MAX_BUCKETS && this.level >= 0 && this.level < RESOLUTIONS.length - 1) {
      this.level++;
      const old = this.buckets;
      this.buckets = new Map();
      for (const [k, v] of old) {
        const c = Math.floor((k * RESOLUTIONS[this.level - 1]!) / this.resolution);
        this.buckets.set(c, (this.buckets.get(c) ?? 0) + v);
      }
    }
  }

  /**
   * The bucket in which `need` bytes, taken oldest first, run out: its start time, and how many
   * of its bytes must go. Infinity when all of it is not enough.
   */
  cut(need: number): { start: number; left: number; sum: number } {
    let acc = 0;
    for (const b of [...this.buckets.keys()].sort((x, y) => x - y)) {
      const bytes = this.buckets.get(b)!;
      if (acc + bytes >= need) return { start: b * this.resolution, left: need - acc, sum: acc + (need - acc) };
      acc += bytes;
    }
    return { start: Infinity, left: 0, sum: acc };
  }
}

/**
 * Least-recently-used eviction over the CAS index, in bounded memory: a first pass over the
 * index builds a histogram of evictable bytes by access time (a second one refines the bucket
 * where the cut falls when the first had to coarsen), which tells how old a blob must be to
 * go; a last pass deletes those blobs in batches. The passes read the index in slices and yield
 * between them, so reads and writes keep being served; each batch is one LMDB transaction
 * that re-checks every blob (not used since it was seen, not in use now).
 */
export class GarbageCollector {
  private readonly now: () => number;
  private readonly scanSlice: number;
  private readonly batchSize: number;
  private readonly isInUse: (key: string) => boolean;
  private readonly maxInFlight: number;
  private readonly overhead: number;

  constructor(
    private readonly store: CollectableStore,
    private readonly options: GarbageCollectorOptions,
  ) {
    const clock = options.clock ?? systemClock;
    this.now = () => Math.floor(clock.now() / 1000);
    this.scanSlice = options.scanSlice ?? 5000;
    this.batchSize = options.batchSize ?? 1000;
    this.isInUse = options.isInUse ?? (() => false);
    this.maxInFlight = options.maxInFlight ?? 4;
    this.overhead = options.perBlobOverhead ?? 0;
  }

  /** What counts against a target: blob bytes plus the per-blob overhead. */
  footprint(u: StoreUsage): number {
    return u.bytes + u.count * this.overhead;
  }

  async collect(request: GcRequest, progress?: (p: GcProgress) => void | Promise<void>, signal?: AbortSignal): Promise<GcSummary> {
    const started = performance.now();
    const dryRun = request.dryRun ?? false;
    const before = this.store.usage();
    const summary: GcSummary = {
      dryRun,
      targetBytes: request.targetBytes,
      maxAgeSeconds: request.maxAgeSeconds,
      ...(request.ignoreGrace ? { ignoredGrace: true } : {}),
      before,
      after: before,
      freedBlobs: 0,
      freedBytes: 0,
      keptRecent: { blobs: 0, bytes: 0 },
      keptInUse: { blobs: 0, bytes: 0 },
      reachedTarget: true,
      perBlobOverhead: this.overhead,
      durationMs: 0,
    };
    // A second round catches what the first could not take because it was used meanwhile.
    for (let round = 0; round < 2 && !signal?.aborted; round++) {
      const freed = await this.round(request, summary, round === 0, progress, signal);
      if (dryRun || freed === 0) break;
      if (request.targetBytes === undefined || this.footprint(this.store.usage()) <= request.targetBytes) break;
    }
    summary.after = dryRun ? { bytes: before.bytes - summary.freedBytes, count: before.count - summary.freedBlobs } : this.store.usage();
    summary.reachedTarget = request.targetBytes === undefined || this.footprint(summary.after) <= request.targetBytes;
    summary.durationMs = Math.round(performance.now() - started);
    return summary;
  }

  /** One histogram pass and one eviction pass; returns the bytes freed. */
  private async round(
    request: GcRequest,
    summary: GcSummary,
    countKept: boolean,
    progress: ((p: GcProgress) => void | Promise<void>) | undefined,
    signal: AbortSignal | undefined,
  ): Promise<number> {
    const dryRun = request.dryRun ?? false;
    const usage = dryRun ? { bytes: summary.before.bytes - summary.freedBytes, count: summary.before.count - summary.freedBlobs } : this.store.usage();
    const need = request.targetBytes === undefined ? 0 : Math.max(0, this.footprint(usage) - request.targetBytes);
    const cost = (e: IndexEntry): number => e.s + this.overhead;
    const now = this.now();
    const graceSeconds = request.ignoreGrace ? 0 : this.options.graceSeconds;
    const graceCutoff = now - graceSeconds;
    const ageCutoff = request.maxAgeSeconds === undefined ? -Infinity : now - request.maxAgeSeconds;
    if (need === 0 && ageCutoff === -Infinity) return 0;

    // Pass 1: evictable bytes by access time; everything older than the age limit goes anyway.
    const histogram = new AccessHistogram();
    let oldBytes = 0;
    const report = throttle(progress);
    let scanned = 0;
    await this.forEachSlice(signal, async (slice) => {
      for (const e of slice) {
        if (e.t > graceCutoff) {
          if (countKept) {
            add(summary.keptRecent, e.s);
            const at = e.t + graceSeconds;
            if (summary.keptRecent.evictableAt === undefined || at < summary.keptRecent.evictableAt) summary.keptRecent.evictableAt = at;
          }
        } else if (this.isInUse(e.key)) {
          if (countKept) add(summary.keptInUse, e.s);
        } else if (e.t < ageCutoff) {
          oldBytes += cost(e);
        } else {
          histogram.add(e.t, cost(e));
        }
      }
      scanned += slice.length;
      await report({ phase: 'scanning', scanned, total: usage.count, goalBytes: 0, freedBlobs: summary.freedBlobs, freedBytes: summary.freedBytes });
    });

    // The cut: blobs last used before cutT go, and `cutLeft` bytes of those used at cutT.
    let cutT = -Infinity;
    let cutLeft = 0;
    let goal = oldBytes;
    const lruNeed = need - oldBytes;
    if (lruNeed > 0) {
      const cut = histogram.cut(lruNeed);
      goal += cut.sum;
      cutT = cut.start;
      cutLeft = cut.left;
      if (cut.start !== Infinity && histogram.resolution > 1) {
        // The histogram had to coarsen: find the second within the bucket where the cut falls.
        const end = cut.start + histogram.resolution;
        const fine = new AccessHistogram(1);
        await this.forEachSlice(signal, async (slice) => {
          for (const e of slice) {
            if (e.t >= cut.start && e.t < end && e.t <= graceCutoff && e.t >= ageCutoff && !this.isInUse(e.key)) fine.add(e.t, cost(e));
          }
        });
        // Everything in the bucket before the cut second goes too (t < cutT).
        const inner = fine.cut(cut.left);
        cutT = inner.start;
        cutLeft = inner.left;
      }
    }
    if (goal === 0) return 0;

    // Pass 2: delete, in key order, the blobs the histogram marked.
    let chosenBytes = 0;
    let freedBytes = 0;
    let batch: IndexEntry[] = [];
    scanned = 0;
    const stillEvictable = (e: IndexEntry): boolean => e.t <= this.now() - graceSeconds && !this.isInUse(e.key);
    const tight = this.options.lowOnSpace?.() ?? false;
    const batchSize = tight ? Math.min(this.batchSize, 200) : this.batchSize;
    const maxInFlight = tight ? 1 : this.maxInFlight;
    // Batches in flight: while one commits (an fsync), the next is chosen and queued, and
    // lmdb-js commits those queued together. Bounded, so memory stays bounded.
    const inFlight: Array<Promise<void>> = [];
    const flush = async (all = false): Promise<void> => {
      if (batch.length > 0) {
        const chosen = batch;
        batch = [];
        const evicting = dryRun ? Promise.resolve({ count: chosen.length, bytes: chosen.reduce((n, c) => n + c.s, 0) }) : this.store.evict(chosen, stillEvictable);
        const done = evicting.then((freed) => {
          summary.freedBlobs += freed.count;
          summary.freedBytes += freed.bytes;
          freedBytes += freed.bytes;
        });
        inFlight.push(done);
        done.finally(() => inFlight.splice(inFlight.indexOf(done), 1)).catch(() => undefined);
      }
      while (inFlight.length > (all ? 0 : maxInFlight - 1)) await Promise.race(inFlight);
    };
    const onlyLru = ageCutoff === -Infinity;
    await this.forEachSlice(signal, async (slice) => {
      for (const e of slice) {
        scanned++;
        if (e.t > graceCutoff || this.isInUse(e.key)) continue;
        let take = e.t < ageCutoff || e.t < cutT;
        if (!take && e.t === cutT && cutLeft > 0) {
          cutLeft -= cost(e);
          take = true;
        }
        if (!take) continue;
        batch.push(e);
        chosenBytes += cost(e);
        if (batch.length >= batchSize) await flush();
        // Everything chosen: the rest of the index need not be read.
        if (onlyLru && chosenBytes >= goal) return true;
      }
      await report({ phase: 'evicting', scanned, total: usage.count, goalBytes: goal, freedBlobs: summary.freedBlobs, freedBytes: summary.freedBytes });
      return false;
    });
    await flush(true);
    await report({ phase: 'evicting', scanned, total: usage.count, goalBytes: goal, freedBlobs: summary.freedBlobs, freedBytes: summary.freedBytes }, true);
    return freedBytes;
  }

  /** The index in key order, a slice at a time; `visit` returns true to stop early. */
  private async forEachSlice(signal: AbortSignal | undefined, visit: (slice: IndexEntry[]) => Promise<boolean | void>): Promise<void> {
    let after: string | undefined;
    for (;;) {
      if (signal?.aborted) return;
      const slice = this.store.scan(after, this.scanSlice);
      if (slice.length === 0) return;
      if (await visit(slice)) return;
      after = slice[slice.length - 1]!.key;
      // Let requests in between slices.
      await nextTurn();
    }
  }
}

function add(into: { blobs: number; bytes: number }, bytes: number): void {
  into.blobs++;
  into.bytes += bytes;
}

/** Progress at most every 100 ms (and when forced), awaiting a slow consumer. */
function throttle(progress: ((p: GcProgress) => void | Promise<void>) | undefined): (p: GcProgress, force?: boolean) => Promise<void> {
  let last = 0;
  return async (p, force = false) => {
    if (!progress) return;
    const now = performance.now();
    if (!force && now - last < 100) return;
    last = now;
    await progress(p);
  };
}
