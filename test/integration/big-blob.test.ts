import type * as grpc from '@grpc/grpc-js';
import { compress as libzstd } from '@mongodb-js/zstd';
import { Decompress } from 'fzstd';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '../../src/client/reapi-client.js';
import { startDaemonProcess, type DaemonProcess } from '../helpers/daemon-process.js';
import { call } from '../helpers/storage.js';

const MiB = 1024 * 1024;
const SIZE = Number(process.env.BIG_BLOB_MIB ?? 300) * MiB + 12345;

/** Chunk i of the big blob: a random MiB stamped with its index (so no two chunks are alike). */
function chunkOf(base: Buffer, i: number): Buffer {
  const len = Math.min(MiB, SIZE - i * MiB);
  const c = Buffer.from(base.subarray(0, len));
  c.writeUInt32LE(i, 0);
  return c;
}

/** Peak and current resident memory of a process (kB → bytes), from /proc. */
function memoryOf(pid: number): { peak: number; rss: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (key: string): number => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)![1]) * 1024;
  return { peak: kb('VmHWM'), rss: kb('VmRSS') };
}

/**
 * A blob far bigger than any buffer the daemon should hold goes up in 1 MiB chunks and comes
 * back by ByteStream.Read, while the daemon's peak memory grows by much less than the blob.
 */
describe(`a ${Math.round(SIZE / MiB)} MiB blob`, () => {
  let p: DaemonProcess;
  let clients: ReturnType<typeof connect>;
  beforeAll(async () => {
    p = await startDaemonProcess();
    clients = connect(p.address);
  });
  afterAll(async () => {
    clients?.close();
    await p?.stop();
  });

  it('uploads and reads back without the daemon holding it in memory', { timeout: 300_000 }, async () => {
    const base = randomBytes(MiB);
    const chunks = Math.ceil(SIZE / MiB);
    const h = createHash('sha256');
    for (let i = 0; i < chunks; i++) h.update(chunkOf(base, i));
    const digest = { hash: h.digest('hex'), sizeBytes: SIZE };

    // Warm up the daemon's upload and read paths, then take its memory baseline.
    await call(clients.cas, 'FindMissingBlobs', { blobDigests: [digest] });
    const before = memoryOf(p.pid);

    const written = await new Promise<{ committedSize: number }>((resolve, reject) => {
      const s = clients.byteStream.Write((err: grpc.ServiceError | null, res: { committedSize: number }) => (err ? reject(err) : resolve(res)));
      const name = `uploads/${randomUUID()}/blobs/${digest.hash}/${SIZE}`;
      void (async () => {
        for (let i = 0; i < chunks; i++) {
          const ok = s.write({ resourceName: i === 0 ? name : '', writeOffset: i * MiB, data: chunkOf(base, i), finishWrite: i === chunks - 1 });
          if (!ok) await new Promise((r) => s.once('drain', r));
        }
        s.end();
      })().catch(reject);
    });
    expect(written.committedSize).toBe(SIZE);
    const afterWrite = memoryOf(p.pid);

    const back = createHash('sha256');
    let got = 0;
    await new Promise<void>((resolve, reject) => {
      const s = clients.byteStream.Read({ resourceName: `blobs/${digest.hash}/${SIZE}` });
      s.on('data', (m: { data: Uint8Array }) => {
        back.update(m.data);
        got += m.data.length;
      });
      s.on('error', reject);
      s.on('end', resolve);
    });
    expect(got).toBe(SIZE);
    expect(back.digest('hex')).toBe(digest.hash);
    const afterRead = memoryOf(p.pid);

    const growth = afterRead.peak - before.peak;
    const report = `daemon peak RSS ${Math.round(before.peak / MiB)} MiB before, ${Math.round(afterWrite.peak / MiB)} after the write, ${Math.round(afterRead.peak / MiB)} after the read`;
    // Measured: ~50 MiB for 100 MiB, ~100 MiB for 300 MiB and for 800 MiB (HTTP/2 windows,
    // queued messages and garbage awaiting collection): bounded, not proportional to the blob.
    expect(growth, report).toBeLessThan(Math.min(160 * MiB, SIZE / 2));
    expect(p.errorLines()).toEqual([]);
  });

  it('goes up and comes back as zstd (one frame for the whole blob, as Bazel sends it) without the daemon holding it either', { timeout: 600_000 }, async () => {
    // Compressible: each MiB is a random 64 KiB repeated, stamped with its index.
    const unit = randomBytes(64 * 1024);
    const chunk = (i: number): Buffer => {
      const c = Buffer.alloc(Math.min(MiB, SIZE - i * MiB));
      for (let o = 0; o < c.length; o += unit.length) unit.copy(c, o);
      c.writeUInt32LE(i, 0);
      return c;
    };
    const chunks = Math.ceil(SIZE / MiB);
    const blob = Buffer.concat(Array.from({ length: chunks }, (_, i) => chunk(i)));
    const h = createHash('sha256');
    for (let off = 0; off < SIZE; off += MiB) h.update(blob.subarray(off, off + MiB));
    const hash = h.digest('hex');
    const compressed = await libzstd(blob, 3);
    expect(compressed.length).toBeLessThan(SIZE / 4);

    await call(clients.cas, 'FindMissingBlobs', { blobDigests: [{ hash, sizeBytes: SIZE }] });
    // Start the peak afresh (Linux: "5" resets VmHWM), else the test above sets it.
    writeFileSync(`/proc/${p.pid}/clear_refs`, '5');
    const before = memoryOf(p.pid);
    const written = await new Promise<{ committedSize: number }>((resolve, reject) => {
      const s = clients.byteStream.Write((err: grpc.ServiceError | null, res: { committedSize: number }) => (err ? reject(err) : resolve(res)));
      const name = `main/uploads/${randomUUID()}/compressed-blobs/zstd/${hash}/${SIZE}`;
      void (async () => {
        for (let off = 0; off < compressed.length; off += MiB) {
          const last = off + MiB >= compressed.length;
          const ok = s.write({ resourceName: off === 0 ? name : '', writeOffset: off, data: compressed.subarray(off, off + MiB), finishWrite: last });
          if (!ok) await new Promise((r) => s.once('drain', r));
        }
        s.end();
      })().catch(reject);
    });
    expect(written.committedSize).toBe(compressed.length);
    const afterWrite = memoryOf(p.pid);

    const back = createHash('sha256');
    let got = 0;
    const decoder = new Decompress((data) => {
      back.update(data);
      got += data.length;
    });
    await new Promise<void>((resolve, reject) => {
      const s = clients.byteStream.Read({ resourceName: `main/compressed-blobs/zstd/${hash}/${SIZE}` });
      s.on('data', (m: { data: Uint8Array }) => decoder.push(m.data));
      s.on('error', reject);
      s.on('end', resolve);
    });
    decoder.push(new Uint8Array(0), true);
    expect(got).toBe(SIZE);
    expect(back.digest('hex')).toBe(hash);
    const afterRead = memoryOf(p.pid);

    const growth = afterRead.peak - before.peak;
    const report = `daemon peak RSS ${Math.round(before.peak / MiB)} MiB before, ${Math.round(afterWrite.peak / MiB)} after the compressed write, ${Math.round(afterRead.peak / MiB)} after the compressed read`;
    console.log(report);
    expect(growth, report).toBeLessThan(Math.min(160 * MiB, SIZE / 2));
    expect(p.errorLines()).toEqual([]);
  });
});
