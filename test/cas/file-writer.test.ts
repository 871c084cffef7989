import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { BlobStore } from '../../src/cas/blob-store.js';
import { createLocalCas } from '../../src/storage/create-storage.js';
import { Digest } from '../../src/digest/digest.js';
import { LmdbEnv } from '../../src/store/lmdb-env.js';
import { bytes } from '../helpers/storage.js';

/** File blobs are written behind the caller: chunks queue up and go to the file in writev batches. */
describe('file blob writer (write-behind)', () => {
  let dir: string;
  let env: LmdbEnv;
  let store: BlobStore;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'reexec-fw-'));
    env = LmdbEnv.open(dir);
    store = createLocalCas(env, dir, { inlineMaxBytes: 1024, fsync: true }).store;
  });
  afterEach(async () => {
    await env.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('stores exactly the bytes of many uneven chunks, more than the write-behind window', async () => {
    const data = bytes(20 * 1024 * 1024 + 12345, 7);
    const digest = Digest.compute(data);
    const w = await store.beginWrite(digest);
    // Uneven chunk sizes, without awaiting in between some of them.
    const sizes = [1, 4096, 65_536, 1024 * 1024, 3 * 1024 * 1024 + 17, 333];
    let off = 0;
    for (let i = 0; off < data.length; i++) {
      const n = Math.min(sizes[i % sizes.length]!, data.length - off);
      await w.write(data.subarray(off, off + n));
      off += n;
      expect(w.written).toBe(off);
    }
    await w.commit();
    expect((await store.get(digest))?.equals(data)).toBe(true);
    expect(readdirSync(join(dir, 'tmp'))).toEqual([]);
  });

  it('abort with writes still in flight leaves no file behind', async () => {
    const data = bytes(16 * 1024 * 1024, 8);
    const digest = Digest.compute(data);
    const w = await store.beginWrite(digest);
    // Each write returns while up to 8 MiB are still queued or being written.
    for (let off = 0; off < data.length / 2; off += 1024 * 1024) await w.write(data.subarray(off, off + 1024 * 1024));
    await w.abort();
    expect(readdirSync(join(dir, 'tmp'))).toEqual([]);
    expect(await store.findMissing([digest])).toHaveLength(1);
    await expect(w.write(Buffer.from('x'))).rejects.toThrow();
  });

  it('still refuses a blob whose bytes do not match, after writing them behind', async () => {
    const data = bytes(4 * 1024 * 1024, 9);
    const digest = Digest.compute(data);
    const w = await store.beginWrite(digest);
    await w.write(data.subarray(0, 2 * 1024 * 1024));
    await w.write(bytes(2 * 1024 * 1024, 10));
    await expect(w.commit()).rejects.toThrow(/hash/);
    expect(readdirSync(join(dir, 'tmp'))).toEqual([]);
    expect(await store.findMissing([digest])).toHaveLength(1);
  });
});
