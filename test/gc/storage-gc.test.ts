import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { LmdbBlobStore } from '../../src/cas/lmdb-blob-store.js';
import { Digest } from '../../src/digest/digest.js';
import type { StorageBudget } from '../../src/gc/storage-budget.js';
import { StorageGc, type GcRunReport } from '../../src/gc/storage-gc.js';
import { LmdbEnv } from '../../src/store/lmdb-env.js';
import { createLogger } from '../../src/util/logger.js';
import { bytes } from '../helpers/storage.js';

const T0 = 1_700_000_000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The daemon's background collection, polled every 20 ms, over a real store. */
describe('background collection', () => {
  let dir: string;
  let env: LmdbEnv;
  let store: LmdbBlobStore;
  let clock = T0;
  let gc: StorageGc | undefined;
  const runs: GcRunReport[] = [];
  const logs: string[] = [];
  // 100 blobs of 100 bytes, counted at 1,124 each (1 KiB overhead): 112,400.
  const budget: StorageBudget = { maxBytes: 100_000, highBytes: 90_000, lowBytes: 60_000, hardLimitBytes: 200_000, minFreeBytes: 1_000_000, graceSeconds: 0, stagingCacheBytes: 0 };
  const start = (freeSpace?: () => Promise<number>) => {
    gc = new StorageGc({ store, budget, log: createLogger({ write: (l) => logs.push(l) }), pollMs: 20, now: () => clock, onRun: (r) => runs.push(r), freeSpace });
    gc.start();
  };

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'reexec-storage-gc-'));
    env = LmdbEnv.open(dir, { noSync: true });
    store = new LmdbBlobStore(env, dir, { inlineMaxBytes: 1024, fsync: false, touchIntervalSeconds: 1, readChunkBytes: 4096 });
    const spy = vi.spyOn(Date, 'now');
    for (let i = 0; i < 100; i++) {
      spy.mockReturnValue((T0 + i) * 1000);
      const data = bytes(100, i + 1);
      await store.put(Digest.compute(data), data);
    }
    spy.mockRestore();
    clock = T0 + 1000;
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
    for (let i = 0; i < 100 && !(runs.length > 0); i++) await sleep(20);
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
    for (let i = 0; i < 100 && runs.length === 0; i++) await sleep(20);
    await gc!.stop();
    runs.length = 0;
    const before = gc!.footprint();
    // …but the disk is 20,000 bytes short of min-free-disk.
    start(async () => budget.minFreeBytes - 20_000);
    for (let i = 0; i < 100 && runs.length === 0; i++) await sleep(20);
    expect(runs).toHaveLength(1);
    // The shortfall and a round's worth (high - low) went.
    expect(before - gc!.footprint()).toBeGreaterThanOrEqual(20_000 + 30_000);
    expect(logs.join('\n')).toMatch(/less than storage\.min-free-disk/);
    await sleep(200);
    expect(runs).toHaveLength(1);
  });
});
