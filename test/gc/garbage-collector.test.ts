import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { LmdbBlobStore, type IndexEntry } from '../../src/cas/lmdb-blob-store.js';
import { Digest } from '../../src/digest/digest.js';
import { GarbageCollector } from '../../src/gc/garbage-collector.js';
import { LmdbEnv } from '../../src/store/lmdb-env.js';
import { bytes } from '../helpers/storage.js';
import { ManualClock } from '../../src/util/clock.js';

const INLINE_MAX = 1024;
const T0 = 1_700_000_000;

/**
 * The collector over a real LMDB store, with a clock the test moves: blobs are stored "at" a
 * given second, so their access times, and so the eviction order, are known.
 */
describe('garbage collection of the CAS', () => {
  let dir: string;
  let env: LmdbEnv;
  let store: LmdbBlobStore;
  const time = new ManualClock(T0 * 1000);

  const open = (): void => {
    env = LmdbEnv.open(dir, { noSync: true });
    store = new LmdbBlobStore(env, dir, { inlineMaxBytes: INLINE_MAX, fsync: false, touchIntervalSeconds: 1, readChunkBytes: 4096, clock: time });
  };
  /** Store `data` at second `t`; resolves to its digest. */
  const putAt = async (t: number, data: Buffer): Promise<Digest> => {
    time.set((t) * 1000);
    const d = Digest.compute(data);
    await store.put(d, data);
    return d;
  };
  const has = (d: Digest): boolean => store.record(d) !== undefined;
  /** Every record, by a full scan: what the counters must agree with. */
  const scanAll = (): IndexEntry[] => store.scan(undefined, 1_000_000);
  const collector = (opts: { graceSeconds?: number; isInUse?: (k: string) => boolean } = {}) =>
    new GarbageCollector(store, { graceSeconds: opts.graceSeconds ?? 0, isInUse: opts.isInUse, clock: time, scanSlice: 7, batchSize: 3 });

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'reexec-gc-'));
        open();
  });
  afterEach(async () => {
    vi.restoreAllMocks();
    await env.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('keeps blob count and bytes in LMDB, in step with the index, across reopening', async () => {
    const a = await putAt(T0, bytes(100, 1));
    const b = await putAt(T0, bytes(5000, 2)); // a file
    await putAt(T0 + 5, bytes(100, 1)); // again: no double count (it only refreshes the access time)
    await env.root.flushed;
    expect(store.usage()).toEqual({ bytes: 5100, count: 2 });
    expect(store.record(a)?.t).toBe(T0 + 5);
    await store.evict([{ key: a.key, s: 100, f: 0, t: T0 + 5 }], () => true);
    expect(store.usage()).toEqual({ bytes: 5000, count: 1 });
    await env.close();
    open();
    expect(store.usage()).toEqual({ bytes: 5000, count: 1 });
    expect(has(b)).toBe(true);
  });

  it('counts a store written before the counters existed, once, when opened', async () => {
    for (let i = 0; i < 20; i++) await putAt(T0, bytes(10 + i, i));
    const expected = { bytes: scanAll().reduce((n, e) => n + e.s, 0), count: 20 };
    await env.root.openDB({ name: 'cas-meta' }).remove('usage');
    await env.close();
    open();
    expect(store.usage()).toEqual(expected);
  });

  it('evicts least-recently-used blobs first, down to the target, and no further', async () => {
    const byAge: Digest[][] = [];
    // Ten generations of ten 100-byte blobs, a minute apart; generation 3 read again lately.
    for (let g = 0; g < 10; g++) {
      byAge.push([]);
      for (let i = 0; i < 10; i++) byAge[g]!.push(await putAt(T0 + g * 60, bytes(100, g * 100 + i + 1)));
    }
    time.set((T0 + 3600) * 1000);
    await store.findMissing(byAge[3]!); // refreshes their access time
    await env.root.flushed;
    expect(store.usage().bytes).toBe(10_000);

    const summary = await collector().collect({ targetBytes: 6_000 });
    expect(summary.freedBytes).toBe(4_000);
    expect(summary.after).toEqual({ bytes: 6_000, count: 60 });
    expect(summary.reachedTarget).toBe(true);
    // Generations 0, 1, 2 and 4 went; 3 (used lately) and 5-9 stayed.
    for (const g of [0, 1, 2, 4]) for (const d of byAge[g]!) expect(has(d), `generation ${g}`).toBe(false);
    for (const g of [3, 5, 6, 7, 8, 9]) for (const d of byAge[g]!) expect(has(d), `generation ${g}`).toBe(true);
    expect(store.usage()).toEqual({ bytes: scanAll().reduce((n, e) => n + e.s, 0), count: scanAll().length });
  });

  it('counts a per-blob overhead against the target when told to', async () => {
    for (let i = 0; i < 10; i++) await putAt(T0 + i, bytes(100, i + 1));
    time.set((T0 + 100) * 1000);
    const gc = new GarbageCollector(store, { graceSeconds: 0, clock: time, perBlobOverhead: 900 });
    expect(gc.footprint(store.usage())).toBe(10_000);
    // 10,000 counted; down to 6,000 takes four blobs (each counts 1,000), not forty.
    const summary = await gc.collect({ targetBytes: 6_000 });
    expect(summary.freedBlobs).toBe(4);
    expect(summary.freedBytes).toBe(400);
    expect(summary.reachedTarget).toBe(true);
  });

  it('never evicts blobs used within the grace period or in use, and says so', async () => {
    const old = await putAt(T0, bytes(100, 1));
    const held = await putAt(T0, bytes(100, 2));
    const recent = await putAt(T0 + 590, bytes(100, 3));
    time.set((T0 + 600) * 1000);
    const summary = await collector({ graceSeconds: 60, isInUse: (k) => k === held.key }).collect({ targetBytes: 0 });
    expect(has(old)).toBe(false);
    expect(has(held)).toBe(true);
    expect(has(recent)).toBe(true);
    expect(summary.freedBlobs).toBe(1);
    // …and says when the first of those leaves the grace period.
    expect(summary.keptRecent).toEqual({ blobs: 1, bytes: 100, evictableAt: T0 + 590 + 60 });
    expect(summary.keptInUse).toEqual({ blobs: 1, bytes: 100 });
    expect(summary.reachedTarget).toBe(false);
  });

  it('evicts blobs within the grace period when asked to ignore it, never those in use', async () => {
    const held = await putAt(T0 + 595, bytes(100, 2));
    const recent = await putAt(T0 + 590, bytes(100, 3));
    time.set((T0 + 600) * 1000);
    const summary = await collector({ graceSeconds: 60, isInUse: (k) => k === held.key }).collect({ targetBytes: 0, ignoreGrace: true });
    expect(has(recent)).toBe(false);
    expect(has(held)).toBe(true);
    expect(summary.freedBlobs).toBe(1);
    expect(summary.ignoredGrace).toBe(true);
    expect(summary.keptRecent.blobs).toBe(0);
    expect(summary.keptInUse).toEqual({ blobs: 1, bytes: 100 });
  });

  it('evicts blobs unused for longer than the age limit, even under the target', async () => {
    const old = await putAt(T0, bytes(100, 1));
    const young = await putAt(T0 + 86400 * 5, bytes(100, 2));
    time.set((T0 + 86400 * 7) * 1000);
    const summary = await collector().collect({ maxAgeSeconds: 86400 * 3 });
    expect(summary.freedBlobs).toBe(1);
    expect(has(old)).toBe(false);
    expect(has(young)).toBe(true);
  });

  it('in a dry run, reports what would go and deletes nothing', async () => {
    for (let i = 0; i < 30; i++) await putAt(T0 + i * 60, bytes(100, i + 1));
    time.set((T0 + 7200) * 1000);
    const dry = await collector().collect({ targetBytes: 1000, dryRun: true });
    expect(dry.dryRun).toBe(true);
    expect(store.usage()).toEqual({ bytes: 3000, count: 30 });
    const real = await collector().collect({ targetBytes: 1000 });
    expect(dry.freedBlobs).toBe(real.freedBlobs);
    expect(dry.freedBytes).toBe(real.freedBytes);
    expect(dry.after).toEqual(real.after);
  });

  it('does not evict a blob used after the collector chose it', async () => {
    const d = await putAt(T0, bytes(100, 1));
    const chosen: IndexEntry = { key: d.key, s: 100, f: 0, t: T0 };
    time.set((T0 + 100) * 1000);
    await store.findMissing([d]); // a client is told it exists: its access time moves
    const freed = await store.evict([chosen], () => true);
    expect(freed.count).toBe(0);
    expect(has(d)).toBe(true);
  });

  it('deletes a file blob after its record; a reader that opened it keeps reading', async () => {
    const data = bytes(200_000, 9);
    const d = await putAt(T0, data);
    const file = store.filePath(d);
    expect(existsSync(file)).toBe(true);
    const reading = await store.read(d, 0, 0);
    time.set((T0 + 1000) * 1000);
    await collector().collect({ targetBytes: 0 });
    expect(has(d)).toBe(false);
    expect(existsSync(file)).toBe(false);
    expect(await store.get(d)).toBeUndefined();
    const parts: Buffer[] = [];
    for await (const c of reading!) parts.push(Buffer.from(c));
    expect(Buffer.concat(parts).equals(data)).toBe(true);
  });

  it('removes blob files that no record refers to (a crash between file and record)', async () => {
    const kept = await putAt(T0, bytes(5000, 1));
    const orphan = Digest.compute(bytes(6000, 2));
    mkdirSync(join(dir, 'blobs', 'sha256', orphan.hash.slice(0, 2)), { recursive: true });
    writeFileSync(join(dir, 'blobs', 'sha256', orphan.hash.slice(0, 2), orphan.hash), bytes(6000, 2));
    expect(await store.removeOrphanFiles()).toEqual({ files: 1, bytes: 6000 });
    expect(existsSync(store.filePath(kept))).toBe(true);
    expect(readdirSync(join(dir, 'blobs', 'sha256', orphan.hash.slice(0, 2)))).not.toContain(orphan.hash);
  });

  it('collects many blobs in bounded steps, oldest minutes first, leaving counters exact', async () => {
    const stored: Array<{ d: Digest; t: number }> = [];
    for (let i = 0; i < 500; i++) {
      const t = T0 + (i % 50) * 60;
      stored.push({ d: await putAt(t, bytes(50 + (i % 7), i + 1)), t });
    }
    time.set((T0 + 86400) * 1000);
    const before = store.usage();
    const target = Math.floor(before.bytes / 3);
    const summary = await collector().collect({ targetBytes: target });
    // Down to the target, within one blob: LRU takes what it must, not more.
    expect(summary.after.bytes).toBeLessThanOrEqual(target);
    expect(summary.after.bytes).toBeGreaterThan(target - 60);
    const all = scanAll();
    expect(store.usage()).toEqual({ bytes: all.reduce((n, e) => n + e.s, 0), count: all.length });
    const evicted = stored.filter((x) => !has(x.d));
    const kept = stored.filter((x) => has(x.d));
    expect(Math.max(...evicted.map((x) => x.t))).toBeLessThanOrEqual(Math.min(...kept.map((x) => x.t)));
  });
});

describe('garbage collection of a store with many distinct access times', () => {
  it('still takes the oldest seconds first when its histogram has to coarsen', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'reexec-gc-'));
    const env = LmdbEnv.open(dir, { noSync: true });
    try {
      const time = new ManualClock(T0 * 1000);
      const store = new LmdbBlobStore(env, dir, { inlineMaxBytes: INLINE_MAX, fsync: false, touchIntervalSeconds: 1, readChunkBytes: 4096, clock: time });
      // 60,000 blobs, each used at its own second: more distinct times than the histogram holds.
      const writes: Promise<void>[] = [];
      for (let i = 0; i < 60_000; i++) {
        time.set((T0 + i) * 1000);
        const data = Buffer.from(`blob ${i}`.padEnd(16, '.'));
        writes.push(store.put(Digest.compute(data), data));
        if (writes.length === 5000) await Promise.all(writes.splice(0));
      }
      await Promise.all(writes);
      time.set((T0 + 100_000) * 1000);
      const gc = new GarbageCollector(store, { graceSeconds: 0, clock: time });
      const summary = await gc.collect({ targetBytes: 16 * 30_000 + 5 });
      expect(summary.after.count).toBe(30_000);
      // Exactly the 30,000 oldest went.
      const left = store.scan(undefined, 100_000);
      expect(Math.min(...left.map((e) => e.t))).toBe(T0 + 30_000);
    } finally {
      vi.restoreAllMocks();
      await env.close();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
