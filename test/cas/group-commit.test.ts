import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { BlobStore } from '../../src/cas/blob-store.js';
import type { LmdbBlobStore } from '../../src/cas/lmdb-blob-store.js';
import { Digest } from '../../src/digest/digest.js';
import { createLocalCas } from '../../src/storage/create-storage.js';
import { LmdbEnv } from '../../src/store/lmdb-env.js';
import { bytes } from '../helpers/storage.js';

/**
 * Blob records are group-committed (all the blobs of one BatchUpdateBlobs, concurrent uploads
 * finishing together): what a client must still see is each blob stored once, counted once,
 * and readable as soon as its put or commit has returned, also when the same blob arrives
 * several times in one batch or from concurrent streams.
 */
describe('group commit of blob records', () => {
  let dir: string;
  let env: LmdbEnv;
  let store: BlobStore;
  let base: LmdbBlobStore;
  const open = (): void => {
    env = LmdbEnv.open(dir);
    ({ store, base } = createLocalCas(env, dir, { inlineMaxBytes: 1024, fsync: true }));
  };
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'reexec-gc-commit-'));
    open();
  });
  afterEach(async () => {
    await env.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('stores a batch of small blobs with duplicates once each, counts them once, and survives a reopen', async () => {
    const blobs = Array.from({ length: 300 }, (_, i) => bytes(100 + (i % 50), i % 200));
    const distinct = new Map(blobs.map((b) => [Digest.compute(b).key, b]));
    expect(distinct.size).toBe(200);
    // All in one turn, as BatchUpdateBlobs issues them: one group commit.
    await Promise.all(blobs.map((b) => store.put(Digest.compute(b), b)));
    const bytesStored = [...distinct.values()].reduce((n, b) => n + b.byteLength, 0);
    expect(base.usage()).toEqual({ bytes: bytesStored, count: 200 });
    for (const b of distinct.values()) expect((await store.get(Digest.compute(b)))?.equals(b)).toBe(true);

    await env.close();
    open();
    expect(base.usage()).toEqual({ bytes: bytesStored, count: 200 });
    for (const b of distinct.values()) expect((await store.get(Digest.compute(b)))?.equals(b)).toBe(true);
  });

  it('commits the same file blob from concurrent uploads once, keeping one file and no temporary ones', async () => {
    const data = bytes(64 * 1024, 3);
    const digest = Digest.compute(data);
    const writers = await Promise.all(Array.from({ length: 4 }, () => store.beginWrite(digest)));
    for (const w of writers) await w.write(data);
    await Promise.all(writers.map((w) => w.commit()));
    expect(base.usage()).toEqual({ bytes: data.byteLength, count: 1 });
    expect((await store.get(digest))?.equals(data)).toBe(true);
    expect(readdirSync(join(dir, 'tmp'))).toEqual([]);
    expect(readdirSync(join(dir, 'blobs', 'sha256', digest.hash.slice(0, 2)))).toEqual([digest.hash]);
  });

  it('commits concurrent file and inline blobs together, each readable once its call has returned', async () => {
    const files = Array.from({ length: 8 }, (_, i) => bytes(200 * 1024 + i, 40 + i));
    const small = Array.from({ length: 50 }, (_, i) => bytes(300, 100 + i));
    await Promise.all([
      ...files.map(async (data) => {
        const d = Digest.compute(data);
        const w = await store.beginWrite(d);
        await w.write(data);
        await w.commit();
        expect((await store.get(d))?.equals(data)).toBe(true);
      }),
      ...small.map(async (data) => {
        const d = Digest.compute(data);
        await store.put(d, data);
        expect((await store.get(d))?.equals(data)).toBe(true);
      }),
    ]);
    const all = [...files, ...small];
    expect(base.usage()).toEqual({ bytes: all.reduce((n, b) => n + b.byteLength, 0), count: all.length });
    expect(readdirSync(join(dir, 'tmp'))).toEqual([]);
  });
});
