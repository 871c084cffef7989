import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LmdbBlobStore } from '../../src/cas/lmdb-blob-store.js';
import { Digest } from '../../src/digest/digest.js';
import type { StorageBudget } from '../../src/gc/storage-budget.js';
import type { GcRun } from '../../src/gc/gc-run.js';
import { StorageGc } from '../../src/gc/storage-gc.js';
import { DiskSpace, RESERVE_FILE } from '../../src/store/disk-space.js';
import { LmdbEnv } from '../../src/store/lmdb-env.js';
import { createLogger } from '../../src/util/logger.js';
import { bytes } from '../helpers/storage.js';
import { waitFor } from '../helpers/wait.js';
import { ManualClock } from '../../src/util/clock.js';

const T0 = 1_700_000_000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The daemon's background collection, polled every 20 ms, over a real store. */
describe('background collection', () => {
  let dir: string;
  let env: LmdbEnv;
  let store: LmdbBlobStore;
  const time = new ManualClock(T0 * 1000);
  let gc: StorageGc | undefined;
  const runs: GcRun[] = [];
  const logs: string[] = [];
  // 100 blobs of 100 bytes, counted at 1,124 each (1 KiB overhead): 112,400.
  const budget: StorageBudget = { maxBytes: 100_000, highBytes: 90_000, lowBytes: 60_000, hardLimitBytes: 200_000, minFreeBytes: 1_000_000, reserveBytes: 0, graceSeconds: 0, stagingCacheBytes: 0 };
  const start = (space?: DiskSpace) => {
    gc = new StorageGc({ store, budget, log: createLogger({ write: (l) => logs.push(l) }), pollMs: 20, clock: time, onRun: (r) => runs.push(r), space });
    gc.start();
  };
  /** The data dir's file system as a test wants it: `free()` bytes free. */
  const fakeSpace = (free: () => number, reserveBytes = 0) =>
    new DiskSpace(dir, { reserveBytes, measure: () => ({ totalBytes: 1e12, freeBytes: free() }), log: createLogger({ write: (l) => logs.push(l) }) });

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'reexec-storage-gc-'));
    env = LmdbEnv.open(dir, { noSync: true });
    store = new LmdbBlobStore(env, dir, { inlineMaxBytes: 1024, fsync: false, touchIntervalSeconds: 1, readChunkBytes: 4096, clock: time });
    for (let i = 0; i < 100; i++) {
      time.set((T0 + i) * 1000);
      const data = bytes(100, i + 1);
      await store.put(Digest.compute(data), data);
    }
    time.set((T0 + 1000) * 1000);
    runs.length = 0;
    logs.length = 0;
  });
  afterEach(async () => {
    await gc?.stop();
    gc = undefined;
    await env.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('brings the CAS from past its high watermark down to its low one, oldest first', async () => {
    start();
    await waitFor('a collection', () => runs.length > 0);
    expect(runs[0]).toMatchObject({ trigger: 'auto', evictedBlobs: 47 });
    expect(gc!.footprint()).toBeLessThanOrEqual(budget.lowBytes);
    expect(gc!.footprint()).toBeGreaterThan(budget.lowBytes - 1124);
    // The 47 oldest went.
    expect(Math.min(...store.scan(undefined, 1000).map((e) => e.t))).toBe(T0 + 47);
    await sleep(100);
    expect(runs).toHaveLength(1);
    expect(logs.join('\n')).toMatch(/past its high watermark/);
  });

  it('makes room when others fill the disk, once, then waits', async () => {
    // Under the high watermark after a first collection…
    start();
    await waitFor('a collection', () => runs.length > 0);
    await gc!.stop();
    runs.length = 0;
    const before = gc!.footprint();
    // …but the disk is 20,000 bytes short of min-free-disk.
    start(fakeSpace(() => budget.minFreeBytes - 20_000));
    await waitFor('a collection', () => runs.length > 0);
    expect(runs).toHaveLength(1);
    // The shortfall and a round's worth (high - low) went.
    expect(before - gc!.footprint()).toBeGreaterThanOrEqual(20_000 + 30_000);
    expect(logs.join('\n')).toMatch(/less than storage\.min-free-disk/);
    await sleep(200);
    expect(runs).toHaveLength(1);
  });

  it('on a full disk, releases the disk reserve so that eviction commits, and re-creates it once there is room', async () => {
    const reserve = join(dir, RESERVE_FILE);
    writeFileSync(reserve, Buffer.alloc(64 * 1024, 1));
    let free = 0;
    const space = fakeSpace(() => free, 64 * 1024);
    expect(space.reservePresent).toBe(true);
    // The store as the daemon opens it: its environment knows the file system.
    await env.close();
    env = LmdbEnv.open(dir, { noSync: true, space });
    store = new LmdbBlobStore(env, dir, store.options);
    // Nothing but deletions may write now.
    expect(() => space.checkRoom('storing blob x')).toThrow(/full .* reexec is evicting/);
    start(space);
    await waitFor('a collection', () => runs.length > 0);
    expect(runs[0]!.evictedBlobs).toBeGreaterThan(0);
    expect(existsSync(reserve)).toBe(false);
    expect(logs.join('\n')).toMatch(/released the 64.0 KiB disk reserve/);
    // The collection made room (as statfs would see it): the reserve comes back.
    free = 10 * 64 * 1024;
    await waitFor('the reserve re-created', () => space.reservePresent && existsSync(reserve));
    expect(() => space.checkRoom('storing blob x')).not.toThrow();
  });
});
