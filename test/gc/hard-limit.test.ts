import * as grpc from '@grpc/grpc-js';
import { afterEach, describe, expect, it } from 'vitest';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { adminCollect } from '../helpers/gc.js';
import { bsWrite, bytes, call, digestOf, expectGrpcError } from '../helpers/storage.js';

const KiB = 1024;
const MiB = 1024 * KiB;

describe('the hard limit', () => {
  let d: TestDaemon | undefined;
  afterEach(async () => {
    await d?.stop();
    d = undefined;
  });

  it('refuses, per blob, what would take the CAS past it, naming the limit and what to do', async () => {
    d = await startTestDaemon((c) => {
      c.storage.maxBytes = { bytes: 1 * MiB };
      c.storage.hardLimit = { share: 1 };
      c.execution.enabled = false;
    });
    const blobs = Array.from({ length: 12 }, (_, i) => bytes(100 * KiB, i + 1));
    const res: any = await call(d.clients.cas, 'BatchUpdateBlobs', { requests: blobs.map((b) => ({ digest: digestOf(b), data: b })) });
    const codes = res.responses.map((r: any) => r.status?.code ?? 0);
    // Ten fit under 1 MiB (uploads moments ago are within the grace period: nothing can be evicted).
    expect(codes.filter((c: number) => c === 0)).toHaveLength(10);
    const refused = res.responses.filter((r: any) => r.status?.code === grpc.status.RESOURCE_EXHAUSTED);
    expect(refused).toHaveLength(2);
    expect(refused[0].status.message).toMatch(/hard limit of 1\.00 MiB/);
    expect(refused[0].status.message).toMatch(/storage\.max-bytes/);
    expect(refused[0].status.message).toMatch(/reexec gc/);

    // ByteStream too, before a byte is stored.
    const big = bytes(300 * KiB, 99);
    const err = await expectGrpcError(bsWrite(d.clients.byteStream, big), grpc.status.RESOURCE_EXHAUSTED, 'hard limit');
    expect(err.details).toContain(digestOf(big).hash);

    // A blob the CAS already holds costs nothing: storing it again is fine.
    const again: any = await call(d.clients.cas, 'BatchUpdateBlobs', { requests: [{ digest: digestOf(blobs[0]!), data: blobs[0] }] });
    expect(again.responses[0].status?.code ?? 0).toBe(0);
    // The empty blob always fits.
    const empty: any = await call(d.clients.cas, 'BatchUpdateBlobs', { requests: [{ digest: digestOf(Buffer.alloc(0)), data: Buffer.alloc(0) }] });
    expect(empty.responses[0].status?.code ?? 0).toBe(0);
    expect(d.daemon.casBase.usage().bytes).toBeLessThanOrEqual(1 * MiB);
  });

  it('counts uploads in progress, so concurrent streams cannot overshoot together', async () => {
    d = await startTestDaemon((c) => {
      c.storage.maxBytes = { bytes: 1 * MiB };
      c.storage.hardLimit = { share: 1 };
      c.execution.enabled = false;
    });
    const blobs = Array.from({ length: 6 }, (_, i) => bytes(300 * KiB, 50 + i));
    const results = await Promise.allSettled(blobs.map((b) => bsWrite(d!.clients.byteStream, b, { chunkBytes: 64 * KiB })));
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(3);
    for (const r of results) if (r.status === 'rejected') expect((r.reason as grpc.ServiceError).code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect(d.daemon.casBase.usage().bytes).toBe(900 * KiB);
  });

  it('refuses writes that would leave the disk with less than min-free-disk', async () => {
    d = await startTestDaemon((c) => {
      c.storage.minFreeDisk = { bytes: Number.MAX_SAFE_INTEGER };
      c.execution.enabled = false;
    });
    const blob = bytes(10 * KiB, 3);
    const res: any = await call(d.clients.cas, 'BatchUpdateBlobs', { requests: [{ digest: digestOf(blob), data: blob }] });
    expect(res.responses[0].status.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect(res.responses[0].status.message).toMatch(/file system holding the data dir .* is nearly full/);
    expect(res.responses[0].status.message).toContain(d.dataDir);
    expect(res.responses[0].status.message).toMatch(/min-free-disk/);
  });

  it('accepts writes again once garbage collection has made room', async () => {
    d = await startTestDaemon((c) => {
      c.storage.maxBytes = { bytes: 1 * MiB };
      c.storage.hardLimit = { share: 1 };
      c.storage.gracePeriodSeconds = 0;
      c.execution.enabled = false;
    });
    const first = Array.from({ length: 10 }, (_, i) => bytes(100 * KiB, 200 + i));
    await call(d.clients.cas, 'BatchUpdateBlobs', { requests: first.map((b) => ({ digest: digestOf(b), data: b })) });
    // (Background eviction may have taken some already: the store passed its high watermark.)
    const summary = await adminCollect(d, { targetBytes: 0 });
    expect(summary.after).toEqual({ bytes: 0, count: 0 });
    const blob = bytes(500 * KiB, 300);
    expect(await bsWrite(d.clients.byteStream, blob)).toEqual({ committedSize: 500 * KiB });
  });
});
