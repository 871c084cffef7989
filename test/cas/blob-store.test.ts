import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { BlobStore } from '../../src/cas/blob-store.js';
import { createLocalCas } from '../../src/storage/create-storage.js';
import type { LmdbBlobStore } from '../../src/cas/lmdb-blob-store.js';
import { Digest } from '../../src/digest/digest.js';
import { SHA1 } from '../../src/digest/digest-function.js';
import { LmdbEnv } from '../../src/store/lmdb-env.js';
import { Code, StatusError } from '../../src/util/status-error.js';

const INLINE_MAX = 64 * 1024;

function bytes(n: number, seed = 1): Buffer {
  const b = Buffer.alloc(n);
  let x = seed * 2654435761;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

async function collect(it: AsyncIterable<Uint8Array> | undefined): Promise<Buffer | undefined> {
  if (!it) return undefined;
  const parts: Buffer[] = [];
  for await (const c of it) parts.push(Buffer.from(c));
  return Buffer.concat(parts);
}

async function expectStatus(p: Promise<unknown>, code: Code, ...mentions: string[]): Promise<void> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, `expected status ${Code[code]}`).toBeInstanceOf(StatusError);
  expect((err as StatusError).code).toBe(code);
  for (const m of mentions) expect((err as StatusError).message).toContain(m);
}

describe('CAS blob store (verifying, empty-blob, LMDB)', () => {
  let dir: string;
  let env: LmdbEnv;
  let store: BlobStore;
  let base: LmdbBlobStore;

  const open = async (): Promise<void> => {
    env = LmdbEnv.open(dir);
    ({ store, base } = createLocalCas(env, dir, { fsync: false, inlineMaxBytes: INLINE_MAX, readChunkBytes: 64 * 1024 }));
    await base.removeStaleUploads();
  };
  const tmpFiles = (): string[] => readdirSync(join(dir, 'tmp'));

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'reexec-cas-'));
    await open();
  });
  afterEach(async () => {
    await env.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('the empty blob is present without ever being uploaded, for every digest function', async () => {
    expect(await store.findMissing([Digest.empty(), Digest.empty(SHA1)])).toEqual([]);
    expect((await store.get(Digest.empty()))?.length).toBe(0);
    expect((await collect(await store.read(Digest.empty(), 0, 0)))?.length).toBe(0);
  });

  it('reports a stored blob asked for with the wrong size as missing', async () => {
    const data = Buffer.from('some blob');
    const d = Digest.compute(data);
    await store.put(d, data);
    const wrongSize = Digest.of(d.fn, d.hash, d.sizeBytes + 1);
    const missing = await store.findMissing([d, wrongSize]);
    expect(missing.map(String)).toEqual([wrongSize.toString()]);
    expect(await store.get(wrongSize)).toBeUndefined();
    expect(await store.read(wrongSize, 0, 0)).toBeUndefined();
  });

  for (const [label, size] of [
    ['inline', 1000],
    ['file-backed', 300 * 1024],
  ] as const) {
    it(`stores and reads back ${label} blobs, whole and by offset/limit`, async () => {
      const data = bytes(size, size);
      const d = Digest.compute(data);
      expect((await store.findMissing([d])).length).toBe(1);
      await store.put(d, data);
      expect(await store.findMissing([d])).toEqual([]);
      expect((await store.get(d))!.equals(data)).toBe(true);
      expect((await collect(await store.read(d, 0, 0)))!.equals(data)).toBe(true);
      expect((await collect(await store.read(d, 100, 0)))!.equals(data.subarray(100))).toBe(true);
      expect((await collect(await store.read(d, 100, 50)))!.equals(data.subarray(100, 150))).toBe(true);
      expect((await collect(await store.read(d, size - 3, 1000)))!.equals(data.subarray(size - 3))).toBe(true);
      expect((await collect(await store.read(d, size, 0)))!.length).toBe(0);
    });

    it(`refuses a ${label} put whose data does not match its digest, and stores nothing`, async () => {
      const data = bytes(size, 7);
      const d = Digest.compute(data);
      const corrupt = Buffer.from(data);
      corrupt[size >> 1] ^= 1;
      await expectStatus(store.put(d, corrupt), Code.INVALID_ARGUMENT, d.hash);
      await expectStatus(store.put(d, data.subarray(1)), Code.INVALID_ARGUMENT, d.hash, String(size - 1));
      expect((await store.findMissing([d])).length).toBe(1);
      expect(tmpFiles()).toEqual([]);
    });

    it(`streams a ${label} upload in chunks; nothing is visible before commit`, async () => {
      const data = bytes(size, 3);
      const d = Digest.compute(data);
      const w = await store.beginWrite(d);
      for (let off = 0; off < size; off += 16 * 1024) {
        await w.write(data.subarray(off, Math.min(size, off + 16 * 1024)));
        expect((await store.findMissing([d])).length).toBe(1);
      }
      expect(w.written).toBe(size);
      await w.commit();
      await w.abort(); // harmless after commit
      expect((await store.get(d))!.equals(data)).toBe(true);
      expect(tmpFiles()).toEqual([]);
    });

    it(`a ${label} streamed upload with a wrong hash fails at commit and leaves nothing behind`, async () => {
      const data = bytes(size, 4);
      const d = Digest.compute(data);
      const w = await store.beginWrite(d);
      const corrupt = Buffer.from(data);
      corrupt[0] ^= 0xff;
      await w.write(corrupt);
      await expectStatus(w.commit(), Code.INVALID_ARGUMENT, d.hash);
      await w.abort();
      expect((await store.findMissing([d])).length).toBe(1);
      expect(tmpFiles()).toEqual([]);
    });

    it(`a ${label} streamed upload refuses more bytes than declared, and a short one cannot commit`, async () => {
      const data = bytes(size, 5);
      const d = Digest.compute(data);
      const w = await store.beginWrite(d);
      await w.write(data);
      await expectStatus(w.write(Buffer.from('x')), Code.INVALID_ARGUMENT, d.hash);
      await w.abort();
      const short = await store.beginWrite(d);
      await short.write(data.subarray(0, size - 1));
      await expectStatus(short.commit(), Code.INVALID_ARGUMENT, String(size - 1));
      await short.abort();
      expect((await store.findMissing([d])).length).toBe(1);
      expect(tmpFiles()).toEqual([]);
    });
  }

  it('two concurrent uploads of the same blob both succeed', async () => {
    const data = bytes(200 * 1024, 9);
    const d = Digest.compute(data);
    const [a, b] = [await store.beginWrite(d), await store.beginWrite(d)];
    await Promise.all([a.write(data.subarray(0, 1000)), b.write(data.subarray(0, 5000))]);
    await Promise.all([a.write(data.subarray(1000)), b.write(data.subarray(5000))]);
    await Promise.all([a.commit(), b.commit(), store.put(d, data)]);
    expect((await store.get(d))!.equals(data)).toBe(true);
  });

  it('blobs survive closing and reopening the store; stale partial uploads are removed', async () => {
    const big = bytes(100 * 1024, 11);
    const small = bytes(100, 12);
    await store.put(Digest.compute(big), big);
    await store.put(Digest.compute(small), small);
    const partial = await store.beginWrite(Digest.compute(bytes(100 * 1024, 13)));
    await partial.write(bytes(1000, 13));
    expect(tmpFiles().length).toBe(1);
    await env.close();
    await open();
    expect(tmpFiles()).toEqual([]);
    expect((await store.get(Digest.compute(big)))!.equals(big)).toBe(true);
    expect((await store.get(Digest.compute(small)))!.equals(small)).toBe(true);
  });

  it('a streamed read of a file blob survives garbage collection while the client is slow', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const data = bytes(4 * 1024 * 1024, 21);
    const d = Digest.compute(data);
    await store.put(d, data);
    const it = (await store.read(d, 0, 0))![Symbol.asyncIterator]();
    const first = await it.next();
    const parts: Buffer[] = [Buffer.from(first.value as Uint8Array)];
    // Nothing but the stream refers to the file now: a collected FileHandle must not close its fd.
    for (let i = 0; i < 5; i++) {
      gc();
      await new Promise((r) => setTimeout(r, 10));
    }
    for (let r = await it.next(); !r.done; r = await it.next()) parts.push(Buffer.from(r.value));
    expect(Buffer.concat(parts).equals(data)).toBe(true);
  });
});
