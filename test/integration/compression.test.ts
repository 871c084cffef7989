import type * as grpc from '@grpc/grpc-js';
import { compress as libzstd } from '@mongodb-js/zstd';
import { decompress as fzstdDecompress } from 'fzstd';
import { randomBytes, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compressChunks } from '../../src/cas/compression.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { parsePrometheusText } from '../helpers/prometheus-text.js';
import { blobName, bsRead, bytes, call, digestOf, expectGrpcError } from '../helpers/storage.js';

const OK = 0;
const INVALID_ARGUMENT = 3;
const NOT_FOUND = 5;
const ZSTD = 1;
const MiB = 1024 * 1024;

/** Text-like data that compresses several times over (lines of a few hundred words). */
function compressible(n: number, seed: number): Buffer {
  const words = Array.from({ length: 300 }, (_, i) => bytes(3 + (i % 9), seed + i).toString('hex'));
  const out = Buffer.alloc(n);
  let pos = 0;
  let x = seed;
  while (pos < n) {
    x = (x * 1103515245 + 12345) >>> 0;
    pos += out.write(`${words[x % words.length]}${x % 13 === 0 ? '\n' : ' '}`, pos);
  }
  return out;
}

/** A zstd stream of one frame, as Bazel's zstd-jni (libzstd) writes one per blob. */
const oneFrame = async (data: Buffer): Promise<Buffer> => libzstd(data, 3);
/** A zstd stream of many frames, as reexec's own compressed reads send. */
async function manyFrames(data: Buffer): Promise<Buffer> {
  const out: Buffer[] = [];
  async function* chunks() {
    for (let i = 0; i < data.length; i += 256 * 1024) yield data.subarray(i, i + 256 * 1024);
  }
  for await (const f of compressChunks(chunks())) out.push(f);
  return Buffer.concat(out);
}

interface WriteRequest {
  resourceName?: string;
  writeOffset: number;
  data: Uint8Array;
  finishWrite?: boolean;
}

/** One Write stream of exactly these requests. */
function writeStream(client: grpc.Client & Record<string, any>, requests: WriteRequest[]): Promise<{ err: grpc.ServiceError | null; res?: { committedSize: number } }> {
  return new Promise((resolve) => {
    const s = client.Write((err: grpc.ServiceError | null, res: { committedSize: number }) => resolve({ err, res }));
    s.on('error', () => undefined);
    void (async () => {
      for (const r of requests) if (!s.write(r)) await new Promise((ok) => s.once('drain', ok));
      s.end();
    })();
  });
}

/** The requests of a compressed upload of `compressed` from uncompressed offset `start`, in chunks (offsets as REAPI says). */
function compressedRequests(name: string, compressed: Buffer, start = 0, chunk = MiB): WriteRequest[] {
  const out: WriteRequest[] = [];
  for (let off = 0; off < compressed.length || out.length === 0; off += chunk) {
    const data = compressed.subarray(off, off + chunk);
    out.push({ resourceName: off === 0 ? name : '', writeOffset: start + off, data, finishWrite: off + chunk >= compressed.length });
  }
  return out;
}

const uploadName = (d: { hash: string; sizeBytes: number }, instance = '', uuid = randomUUID()): string =>
  `${instance ? `${instance}/` : ''}uploads/${uuid}/compressed-blobs/zstd/${d.hash}/${d.sizeBytes}`;
const readName = (d: { hash: string; sizeBytes: number }, instance = ''): string => `${instance ? `${instance}/` : ''}compressed-blobs/zstd/${d.hash}/${d.sizeBytes}`;

describe('zstd compression', () => {
  let d: TestDaemon;
  const bs = (): grpc.Client & Record<string, any> => d.clients.byteStream;
  const cas = (): grpc.Client & Record<string, any> => d.clients.cas;
  const missing = async (data: Buffer): Promise<boolean> =>
    ((await call(cas(), 'FindMissingBlobs', { blobDigests: [digestOf(data)] })) as any).missingBlobDigests.length > 0;
  const metrics = async () => parsePrometheusText(await d.daemon.telemetry.registry.metrics());

  beforeAll(async () => {
    d = await startTestDaemon();
  });
  afterAll(() => d.stop());

  it('is advertised for ByteStream and for batch updates', async () => {
    const caps: any = await call(d.clients.capabilities, 'GetCapabilities', {});
    expect(caps.cacheCapabilities.supportedCompressors).toEqual([ZSTD]);
    expect(caps.cacheCapabilities.supportedBatchUpdateCompressors).toEqual([ZSTD]);
  });

  describe('ByteStream Write of compressed-blobs/zstd', () => {
    for (const [label, frames] of [
      ['one frame (Bazel)', oneFrame],
      ['many frames', manyFrames],
    ] as const) {
      it(`stores a blob sent as ${label}, verified against its uncompressed digest; committed_size counts the compressed bytes`, async () => {
        const data = compressible(5 * MiB + 321, label.length);
        const z = await frames(data);
        expect(z.length).toBeLessThan(data.length / 2);
        const { err, res } = await writeStream(bs(), compressedRequests(uploadName(digestOf(data), 'inst/a'), z, 0, 256 * 1024));
        expect(err, err?.details).toBeNull();
        expect(res!.committedSize).toBe(z.length);
        expect((await bsRead(bs(), blobName(digestOf(data)))).equals(data)).toBe(true);
      });
    }

    it('accepts trailing metadata after the size in an upload name', async () => {
      const data = compressible(10_000, 5);
      const z = await oneFrame(data);
      const { err, res } = await writeStream(bs(), compressedRequests(`${uploadName(digestOf(data))}/some/metadata`, z));
      expect(err, err?.details).toBeNull();
      expect(res!.committedSize).toBe(z.length);
      expect(await missing(data)).toBe(false);
    });

    it('answers an upload of a blob already present at once with committed_size -1', async () => {
      const data = compressible(300_000, 6);
      const z = await oneFrame(data);
      await writeStream(bs(), compressedRequests(uploadName(digestOf(data)), z));
      const { err, res } = await writeStream(bs(), compressedRequests(uploadName(digestOf(data)), z));
      expect(err).toBeNull();
      expect(res!.committedSize).toBe(-1);
    });

    it('refuses data that does not decompress to the digest, corrupt data, and a zstd bomb, storing nothing', async () => {
      const data = compressible(200_000, 7);
      const other = compressible(200_000, 8);
      const wrong = await writeStream(bs(), compressedRequests(uploadName(digestOf(data)), await oneFrame(other)));
      expect(wrong.err?.code).toBe(INVALID_ARGUMENT);
      expect(wrong.err?.details).toContain(digestOf(data).hash);

      const z = await oneFrame(data);
      const corrupt = Buffer.from(z);
      corrupt.fill(0xa5, 40, 400);
      const bad = await writeStream(bs(), compressedRequests(uploadName(digestOf(data)), corrupt));
      expect(bad.err?.code).toBe(INVALID_ARGUMENT);
      const notZstd = await writeStream(bs(), compressedRequests(uploadName(digestOf(data)), data.subarray(0, 1000)));
      expect(notZstd.err?.code).toBe(INVALID_ARGUMENT);
      expect(notZstd.err?.details).toContain('zstd');

      // 1 GiB of zeros in 32 KiB, claimed to be a 200,000-byte blob: refused after ~1 MiB of output.
      const bomb = await libzstd(Buffer.alloc(1024 * MiB), 19);
      expect(bomb.length).toBeLessThan(64 * 1024);
      const boom = await writeStream(bs(), compressedRequests(uploadName(digestOf(data)), bomb));
      expect(boom.err?.code).toBe(INVALID_ARGUMENT);
      expect(boom.err?.details).toContain('more than the 200000 bytes');

      const truncated = await writeStream(bs(), compressedRequests(uploadName(digestOf(data)), z.subarray(0, z.length - 5)));
      expect(truncated.err?.code).toBe(INVALID_ARGUMENT);
      expect(truncated.err?.details).toContain('middle of a frame');
      expect(await missing(data)).toBe(true);
    });

    it('checks write_offset as REAPI says: the first is uncompressed, later ones add compressed bytes', async () => {
      const data = compressible(400_000, 9);
      const z = await oneFrame(data);
      const name = uploadName(digestOf(data));
      const reqs = compressedRequests(name, z, 0, 1000);
      expect(reqs.length).toBeGreaterThan(3);
      // A client that counted uncompressed bytes in later requests.
      const wrong = reqs.map((r, i) => (i === 2 ? { ...r, writeOffset: 2500 } : r));
      const res = await writeStream(bs(), wrong);
      expect(res.err?.code).toBe(INVALID_ARGUMENT);
      expect(res.err?.details).toContain('must carry 2000');
      expect(await missing(data)).toBe(true);
    });

    it('resumes a broken compressed upload: QueryWriteStatus reports uncompressed bytes, the rest comes as a new zstd stream', async () => {
      // Half text, half noise: about 2:1, so that half the compressed stream is about half the blob.
      const data = Buffer.concat(Array.from({ length: 6 * 64 }, (_, i) => (i % 2 ? randomBytes(8 * 1024) : compressible(8 * 1024, i))));
      const digest = digestOf(data);
      const z = await oneFrame(data);
      /** Sends about half the stream, waits until the server has taken some of it, breaks the call; resolves to QueryWriteStatus's offset. */
      const breakHalfway = async (name: string): Promise<{ resumeAt: number; sent: number }> => {
        const s = bs().Write(() => undefined);
        s.on('error', () => undefined);
        const first = compressedRequests(name, z, 0, 64 * 1024).slice(0, Math.ceil(z.length / 2 / (64 * 1024)));
        for (const r of first) s.write({ ...r, finishWrite: false });
        let progress: any = { committedSize: 0 };
        while (progress.committedSize === 0) progress = await call(bs(), 'QueryWriteStatus', { resourceName: name }).catch(() => ({ committedSize: 0 }));
        s.cancel();
        let status: any;
        do status = await call(bs(), 'QueryWriteStatus', { resourceName: name });
        while (status.committedSize < progress.committedSize);
        expect(status.complete).toBe(false);
        expect(status.committedSize).toBeGreaterThan(0);
        expect(status.committedSize).toBeLessThan(data.length);
        return { resumeAt: status.committedSize, sent: first.length * 64 * 1024 };
      };

      // Continuing the old stream from a compressed offset (not what REAPI says) is refused, naming the frame.
      const other = uploadName(digest);
      const broken = await breakHalfway(other);
      const continued = await writeStream(bs(), [{ resourceName: other, writeOffset: broken.resumeAt, data: z.subarray(broken.sent), finishWrite: true }]);
      expect(continued.err?.code).toBe(INVALID_ARGUMENT);
      expect(continued.err?.details).toContain('zstd frame');
      expect(await missing(data)).toBe(true);

      // The spec's way: a new zstd stream of the rest, at the uncompressed offset QueryWriteStatus gave.
      const name = uploadName(digest);
      const { resumeAt } = await breakHalfway(name);
      const rest = await oneFrame(data.subarray(resumeAt));
      const resumed = await writeStream(bs(), compressedRequests(name, rest, resumeAt, 100_000));
      expect(resumed.err, resumed.err?.details).toBeNull();
      expect(resumed.res!.committedSize).toBe(resumeAt + rest.length);
      expect((await bsRead(bs(), blobName(digest))).equals(data)).toBe(true);
      expect(await call(bs(), 'QueryWriteStatus', { resourceName: name })).toMatchObject({ committedSize: data.length, complete: true });
    });
  });

  describe('ByteStream Read of compressed-blobs/zstd', () => {
    const small = compressible(50_000, 20);
    const large = compressible(3 * MiB + 7, 21);
    beforeAll(async () => {
      for (const data of [small, large]) expect((await writeStream(bs(), compressedRequests(uploadName(digestOf(data)), await oneFrame(data)))).err).toBeNull();
    });

    it('sends a zstd stream that decompresses to the blob, from read_offset (an uncompressed offset)', async () => {
      for (const data of [small, large]) {
        for (const offset of [0, 1, 40_000, data.length - 1, data.length]) {
          const z = await bsRead(bs(), readName(digestOf(data), 'some/instance'), offset);
          expect(Buffer.from(fzstdDecompress(z)).equals(data.subarray(offset)), `offset ${offset}`).toBe(true);
        }
      }
      const z = await bsRead(bs(), readName(digestOf(large)));
      expect(z.length).toBeLessThan(large.length / 2);
    });

    it('reads the empty blob as a well-formed zstd stream', async () => {
      const z = await bsRead(bs(), readName({ hash: 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855', sizeBytes: 0 }));
      expect(z.length).toBeGreaterThan(0);
      expect(fzstdDecompress(z).length).toBe(0);
    });

    it('refuses a read_limit (REAPI), answers NOT_FOUND for an absent blob', async () => {
      await expectGrpcError(bsRead(bs(), readName(digestOf(small)), 0, 100), INVALID_ARGUMENT, 'read_limit');
      const absent = digestOf(compressible(1000, 22));
      await expectGrpcError(bsRead(bs(), readName(absent), 10), NOT_FOUND, absent.hash);
    });
  });

  describe('batches', () => {
    it('BatchUpdateBlobs takes zstd entries, verified against their digests, each with its own status', async () => {
      const a = compressible(100_000, 30);
      const b = compressible(2000, 31);
      const lie = compressible(5000, 32);
      const res: any = await call(cas(), 'BatchUpdateBlobs', {
        requests: [
          { digest: digestOf(a), data: await oneFrame(a), compressor: ZSTD },
          { digest: digestOf(b), data: b },
          { digest: digestOf(lie), data: await oneFrame(compressible(5000, 33)), compressor: ZSTD },
          { digest: digestOf(lie), data: Buffer.from('not zstd at all'), compressor: ZSTD },
          { digest: digestOf(lie), data: await libzstd(Buffer.alloc(64 * MiB), 19), compressor: ZSTD },
          { digest: digestOf(lie), data: lie, compressor: 7 },
        ],
      });
      expect(res.responses.map((r: any) => r.status?.code ?? 0)).toEqual([OK, OK, INVALID_ARGUMENT, INVALID_ARGUMENT, INVALID_ARGUMENT, INVALID_ARGUMENT]);
      expect(res.responses[3].status.message).toContain('zstd');
      expect(res.responses[4].status.message).toContain('more than the 5000 bytes');
      expect(res.responses[5].status.message).toContain('compressor 7');
      expect(await missing(a)).toBe(false);
      expect(await missing(lie)).toBe(true);
    });

    it('BatchReadBlobs compresses what gains from it when the client accepts zstd, and nothing otherwise', async () => {
      const text = compressible(200_000, 40);
      const noise = randomBytes(50_000);
      const tiny = Buffer.from('tiny');
      await call(cas(), 'BatchUpdateBlobs', { requests: [text, noise, tiny].map((x) => ({ digest: digestOf(x), data: x })) });
      const digests = [text, noise, tiny].map(digestOf);
      const res: any = await call(cas(), 'BatchReadBlobs', { digests, acceptableCompressors: [ZSTD] });
      expect(res.responses.map((r: any) => r.compressor ?? 0)).toEqual([ZSTD, 0, 0]);
      expect(res.responses[0].data.length).toBeLessThan(text.length / 2);
      expect(Buffer.from(fzstdDecompress(res.responses[0].data)).equals(text)).toBe(true);
      expect(Buffer.from(res.responses[1].data).equals(noise)).toBe(true);
      const plain: any = await call(cas(), 'BatchReadBlobs', { digests });
      expect(plain.responses.map((r: any) => r.compressor ?? 0)).toEqual([0, 0, 0]);
      expect(Buffer.from(plain.responses[0].data).equals(text)).toBe(true);
    });
  });

  it('counts compressed reads and writes in the metrics', async () => {
    const m = await metrics();
    for (const direction of ['read', 'write']) {
      expect(m.value('reexec_cas_compressed_transfers_total', { compressor: 'zstd', direction })).toBeGreaterThan(0);
      expect(m.value('reexec_cas_compressed_transfer_bytes_total', { compressor: 'zstd', direction, form: 'uncompressed' })).toBeGreaterThan(
        m.value('reexec_cas_compressed_transfer_bytes_total', { compressor: 'zstd', direction, form: 'compressed' }),
      );
    }
  });
});
