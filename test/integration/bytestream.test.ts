import type * as grpc from '@grpc/grpc-js';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { blobName, bsRead, bsWrite, bytes, call, digestOf, expectGrpcError, uploadName } from '../helpers/storage.js';

const INVALID_ARGUMENT = 3;
const NOT_FOUND = 5;
const OUT_OF_RANGE = 11;
const MiB = 1024 * 1024;

describe('ByteStream', () => {
  let d: TestDaemon;
  const bs = (): grpc.Client & Record<string, any> => d.clients.byteStream;
  const missing = async (data: Buffer): Promise<boolean> =>
    ((await call(d.clients.cas, 'FindMissingBlobs', { blobDigests: [digestOf(data)] })) as any).missingBlobDigests.length > 0;

  beforeAll(async () => {
    d = await startTestDaemon();
  });
  afterAll(() => d.stop());

  describe('Write', () => {
    it('stores a multi-MiB blob sent in 1 MiB chunks (file-backed) and reports committed_size = size', async () => {
      const data = bytes(5 * MiB + 123, 1);
      expect(await bsWrite(bs(), data)).toEqual({ committedSize: data.length });
      expect(await missing(data)).toBe(false);
      expect((await bsRead(bs(), blobName(digestOf(data)))).equals(data)).toBe(true);
    });

    it('stores a small blob (inline), with and without an instance name', async () => {
      const a = bytes(1000, 2);
      const b = bytes(64 * 1024, 3);
      expect(await bsWrite(bs(), a)).toEqual({ committedSize: 1000 });
      expect(await bsWrite(bs(), b, { instance: 'main/x', chunkBytes: 10_000 })).toEqual({ committedSize: 64 * 1024 });
      expect((await bsRead(bs(), blobName(digestOf(a)))).equals(a)).toBe(true);
      expect((await bsRead(bs(), blobName(digestOf(b), 'main/x'))).equals(b)).toBe(true);
    });

    it('accepts the empty blob', async () => {
      expect(await bsWrite(bs(), Buffer.alloc(0))).toEqual({ committedSize: 0 });
    });

    for (const [label, size] of [
      ['small', 2000],
      ['large', 2 * MiB + 5],
    ] as const) {
      it(`refuses a ${label} blob whose hash does not match with INVALID_ARGUMENT; nothing becomes visible`, async () => {
        const data = bytes(size, 4);
        const claimed = digestOf(bytes(size, 5));
        const err = await bsWrite(bs(), data, {}, claimed).then(
          () => undefined,
          (e: grpc.ServiceError) => e,
        );
        expect(err?.code).toBe(INVALID_ARGUMENT);
        expect(err?.details).toContain(claimed.hash);
        expect(await missing(bytes(size, 5))).toBe(true);
        await expectGrpcError(bsRead(bs(), blobName(claimed)), NOT_FOUND);
      });
    }

    it('refuses more data than the digest declares, and a stream ending without finish_write', async () => {
      const data = bytes(3000, 6);
      const err = await bsWrite(bs(), Buffer.concat([data, Buffer.from('extra')]), { chunkBytes: 1000 }, digestOf(data)).then(
        () => undefined,
        (e: grpc.ServiceError) => e,
      );
      expect(err?.code).toBe(INVALID_ARGUMENT);
      const unfinished = await new Promise<grpc.ServiceError | null>((resolve) => {
        const s = bs().Write((e: grpc.ServiceError | null) => resolve(e));
        s.write({ resourceName: uploadName(digestOf(data)), writeOffset: 0, data: data.subarray(0, 100) });
        s.end();
      });
      expect(unfinished?.code).toBe(INVALID_ARGUMENT);
      expect(await missing(data)).toBe(true);
    });

    it('answers a write of an already-present blob with committed_size = size', async () => {
      const data = bytes(3 * MiB, 7);
      await bsWrite(bs(), data);
      expect(await bsWrite(bs(), data)).toEqual({ committedSize: data.length });
      const small = bytes(10, 8);
      await bsWrite(bs(), small);
      expect(await bsWrite(bs(), small)).toEqual({ committedSize: 10 });
    });

    it('answers a request sent after finish_write with INVALID_ARGUMENT, and stores nothing', async () => {
      for (const size of [3000, 2 * MiB]) {
        const data = bytes(size, 35 + size);
        const err = await new Promise<grpc.ServiceError | null>((resolve) => {
          const s = bs().Write((e: grpc.ServiceError | null) => resolve(e));
          s.on('error', () => undefined);
          s.write({ resourceName: uploadName(digestOf(data)), writeOffset: 0, data, finishWrite: true });
          s.write({ writeOffset: size, data: Buffer.alloc(0) });
          s.end();
        });
        expect(err?.code, `size ${size}`).toBe(INVALID_ARGUMENT);
        expect(err?.details).toContain('finish_write');
        expect(await missing(data)).toBe(true);
      }
    });

    it('refuses malformed upload names, naming them', async () => {
      const data = bytes(10, 9);
      const h = digestOf(data).hash;
      const names = [`blobs/${h}/10`, `uploads/${randomUUID()}/blobs/${h}`, `uploads/${randomUUID()}/blobs/${h}/ten`, `a//b/uploads/x/blobs/${h}/10`];
      for (const [name, mention] of names.map((n) => [n, n.startsWith('a//b') ? '"a//b"' : n])) {
        const err = await new Promise<grpc.ServiceError | null>((resolve) => {
          const s = bs().Write((e: grpc.ServiceError | null) => resolve(e));
          s.write({ resourceName: name, writeOffset: 0, data, finishWrite: true });
          s.end();
        });
        expect(err?.code, name).toBe(INVALID_ARGUMENT);
        expect(err?.details).toContain(mention);
      }
    });

    it('resumes a broken upload: QueryWriteStatus reports the committed bytes, Write continues at write_offset', async () => {
      for (const size of [6 * MiB + 17, 50_000]) {
        const data = bytes(size, 10 + size);
        const uuid = randomUUID();
        const name = uploadName(digestOf(data), uuid);
        const breakAt = size > MiB ? 3 * MiB : 30_000;
        const chunkBytes = size > MiB ? MiB : 10_000;
        expect(await bsWrite(bs(), data, { uuid, breakAfter: breakAt, chunkBytes, breakWhenServerHas: 1 })).toBe('cancelled');
        const status: any = await call(bs(), 'QueryWriteStatus', { resourceName: name });
        expect(status.complete).toBe(false);
        expect(status.committedSize, `size ${size}`).toBeGreaterThan(0);
        expect(status.committedSize).toBeLessThanOrEqual(breakAt);
        expect(await missing(data)).toBe(true);
        expect(await bsWrite(bs(), data, { uuid, offset: status.committedSize, chunkBytes })).toEqual({ committedSize: size });
        expect((await bsRead(bs(), blobName(digestOf(data)))).equals(data)).toBe(true);
        const after: any = await call(bs(), 'QueryWriteStatus', { resourceName: name });
        expect(after).toMatchObject({ committedSize: size, complete: true });
      }
    });

    it('resumes at once after breaking a stream, the way Bazel retries: QueryWriteStatus, then Write from there', async () => {
      for (let round = 0; round < 5; round++) {
        const data = bytes(4 * MiB + round, 40 + round);
        const uuid = randomUUID();
        expect(await bsWrite(bs(), data, { uuid, breakAfter: 2 * MiB + round * 100_000, breakWaitMs: round * 5 })).toBe('cancelled');
        const status: any = await call(bs(), 'QueryWriteStatus', { resourceName: uploadName(digestOf(data), uuid) }).catch((e: grpc.ServiceError) => {
          expect(e.code).toBe(NOT_FOUND);
          return { committedSize: 0 };
        });
        expect(await bsWrite(bs(), data, { uuid, offset: status.committedSize })).toEqual({ committedSize: data.length });
        expect((await bsRead(bs(), blobName(digestOf(data)))).equals(data)).toBe(true);
      }
    });

    it('refuses to resume at an offset the server does not hold; QueryWriteStatus of an unknown upload is NOT_FOUND', async () => {
      const data = bytes(200_000, 12);
      const uuid = randomUUID();
      await bsWrite(bs(), data, { uuid, breakAfter: 100_000, chunkBytes: 50_000, breakWhenServerHas: 1 });
      const status: any = await call(bs(), 'QueryWriteStatus', { resourceName: uploadName(digestOf(data), uuid) });
      const err = await bsWrite(bs(), data, { uuid, offset: status.committedSize + 1, chunkBytes: 50_000 }).then(
        () => undefined,
        (e: grpc.ServiceError) => e,
      );
      expect(err?.code).toBe(INVALID_ARGUMENT);
      expect(err?.details).toContain('write_offset');
      // Restarting from 0 always works.
      expect(await bsWrite(bs(), data, { uuid, chunkBytes: 50_000 })).toEqual({ committedSize: data.length });
      await expectGrpcError(call(bs(), 'QueryWriteStatus', { resourceName: uploadName(digestOf(bytes(10, 13))) }), NOT_FOUND);
    });

    it('accepts one upload UUID reused concurrently for different blobs and for the same blob (BuildStream 1.6)', async () => {
      const uuid = randomUUID();
      const blobs = [bytes(3 * MiB, 20), bytes(2 * MiB, 21), bytes(5000, 22), bytes(100_000, 23)];
      const same = bytes(2 * MiB + 1, 24);
      const sameSmall = bytes(777, 25);
      const writes = [
        ...blobs.map((b) => bsWrite(bs(), b, { uuid, chunkBytes: 256 * 1024 })),
        ...[1, 2, 3].map(() => bsWrite(bs(), same, { uuid, chunkBytes: 256 * 1024 })),
        ...[1, 2, 3].map(() => bsWrite(bs(), sameSmall, { uuid, chunkBytes: 100 })),
      ];
      const results = await Promise.all(writes);
      expect(results).toEqual([...blobs, same, same, same, sameSmall, sameSmall, sameSmall].map((b) => ({ committedSize: b.length })));
      for (const b of [...blobs, same, sameSmall]) expect((await bsRead(bs(), blobName(digestOf(b)))).equals(b)).toBe(true);
    });
  });

  describe('Read', () => {
    const small = bytes(10_000, 30);
    const large = bytes(3 * MiB + 99, 31);
    beforeAll(async () => {
      await bsWrite(bs(), small);
      await bsWrite(bs(), large);
    });

    it('honours read_offset and read_limit (inline and file-backed)', async () => {
      for (const data of [small, large]) {
        const name = blobName(digestOf(data));
        expect((await bsRead(bs(), name, 0, 0)).equals(data)).toBe(true);
        expect((await bsRead(bs(), name, 1234)).equals(data.subarray(1234))).toBe(true);
        expect((await bsRead(bs(), name, 1234, 100)).equals(data.subarray(1234, 1334))).toBe(true);
        expect((await bsRead(bs(), name, data.length - 10, 1000)).equals(data.subarray(data.length - 10))).toBe(true);
        expect((await bsRead(bs(), name, data.length)).length).toBe(0);
      }
      const mid = MiB + 5;
      expect((await bsRead(bs(), blobName(digestOf(large)), mid, 2 * MiB)).equals(large.subarray(mid, mid + 2 * MiB))).toBe(true);
    });

    it('reads with an instance name and with a digest function segment', async () => {
      const h = digestOf(small);
      expect((await bsRead(bs(), `some/inst/blobs/${h.hash}/${h.sizeBytes}`)).equals(small)).toBe(true);
      expect((await bsRead(bs(), `blobs/sha256/${h.hash}/${h.sizeBytes}`)).equals(small)).toBe(true);
    });

    it('reads the empty blob without anyone uploading it', async () => {
      expect((await bsRead(bs(), 'blobs/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855/0')).length).toBe(0);
    });

    it('answers OUT_OF_RANGE for read_offset > size, NOT_FOUND for an absent blob, INVALID_ARGUMENT for a bad name or limit', async () => {
      await expectGrpcError(bsRead(bs(), blobName(digestOf(small)), small.length + 1), OUT_OF_RANGE, String(small.length + 1));
      await expectGrpcError(bsRead(bs(), blobName(digestOf(small)), -1), OUT_OF_RANGE);
      await expectGrpcError(bsRead(bs(), blobName(digestOf(small)), 0, -1), INVALID_ARGUMENT, 'read_limit');
      const absent = digestOf(bytes(50, 32));
      await expectGrpcError(bsRead(bs(), blobName(absent)), NOT_FOUND, absent.hash);
      await expectGrpcError(bsRead(bs(), blobName({ ...digestOf(small), sizeBytes: small.length - 1 })), NOT_FOUND);
      await expectGrpcError(bsRead(bs(), 'blobs/nothex/5'), INVALID_ARGUMENT, 'nothex');
      await expectGrpcError(bsRead(bs(), `uploads/x/blobs/${digestOf(small).hash}`), INVALID_ARGUMENT);
    });

    it('answers NOT_FOUND for an absent blob at any offset, OUT_OF_RANGE only for a present one', async () => {
      const absent = digestOf(bytes(5000, 34));
      for (const offset of [0, 10, 4999, 5000, 5001, 1_000_000]) {
        await expectGrpcError(bsRead(bs(), blobName(absent), offset), NOT_FOUND, absent.hash);
      }
      await expectGrpcError(bsRead(bs(), blobName(digestOf(small)), 1_000_000), OUT_OF_RANGE, '1000000');
    });

    it('refuses extra segments after the size in a read name (only upload names carry metadata)', async () => {
      const h = digestOf(small);
      await expectGrpcError(bsRead(bs(), `blobs/${h.hash}/${h.sizeBytes}/extra`), INVALID_ARGUMENT, 'extra', 'after the size');
      await expectGrpcError(bsRead(bs(), `i/compressed-blobs/zstd/${h.hash}/${h.sizeBytes}/x/y`), INVALID_ARGUMENT, 'x/y');
    });

    it('refuses compressors it does not advertise (deflate, brotli) without harm', async () => {
      const h = digestOf(small);
      for (const c of ['deflate', 'brotli']) {
        await expectGrpcError(bsRead(bs(), `compressed-blobs/${c}/${h.hash}/${h.sizeBytes}`), 12, c, 'zstd');
        const err = await new Promise<grpc.ServiceError | null>((resolve) => {
          const s = bs().Write((e: grpc.ServiceError | null) => resolve(e));
          s.on('error', () => undefined);
          s.write({ resourceName: `uploads/${randomUUID()}/compressed-blobs/${c}/${h.hash}/${h.sizeBytes}`, writeOffset: 0, data: Buffer.from('x'), finishWrite: true });
          s.end();
        });
        expect(err?.code).toBe(12);
      }
      const batch: any = await call(d.clients.cas, 'BatchUpdateBlobs', { requests: [{ digest: h, data: small, compressor: 2 }] });
      expect(batch.responses[0].status.code).toBe(INVALID_ARGUMENT);
      expect(batch.responses[0].status.message).toContain('compressor');
      expect((await bsRead(bs(), blobName(h))).equals(small)).toBe(true);
    });

    it('survives a reader that cancels mid-stream', async () => {
      const name = blobName(digestOf(large));
      await new Promise<void>((resolve) => {
        const s = bs().Read({ resourceName: name });
        s.once('data', () => s.cancel());
        s.on('error', () => resolve());
        s.on('end', () => resolve());
      });
      expect((await bsRead(bs(), name)).equals(large)).toBe(true);
    });
  });
});
