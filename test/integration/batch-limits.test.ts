import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { clientConstructors, grpcTarget } from '../../src/client/reapi-client.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { bytes, call, digestOf, expectGrpcError } from '../helpers/storage.js';

const OK = 0;

/**
 * max_batch_total_size_bytes counts blob bytes; a batch also carries digests and statuses. A
 * client that keeps gRPC's default 4 MiB receive limit (grpc-js, like most) must be able to
 * send and receive a batch exactly at the advertised limit.
 */
describe('batch size limits against a client with gRPC default message limits', () => {
  let d: TestDaemon;
  let cas: grpc.Client & Record<string, any>;
  let limit: number;
  const blobsTotalling = (total: number, count: number, seed: number): Buffer[] =>
    Array.from({ length: count }, (_, i) => bytes(i < count - 1 ? Math.floor(total / count) : total - Math.floor(total / count) * (count - 1), seed + i));

  beforeAll(async () => {
    d = await startTestDaemon();
    // No channel options at all: grpc-js's defaults, 4 MiB received at most.
    cas = new clientConstructors.cas(grpcTarget(d.address), grpc.credentials.createInsecure()) as typeof cas;
    const caps: any = await call(d.clients.capabilities, 'GetCapabilities', {});
    limit = Number(caps.cacheCapabilities.maxBatchTotalSizeBytes);
  });
  afterAll(async () => {
    cas?.close();
    await d.stop();
  });

  it('advertises a limit that leaves room for framing under 4 MiB', () => {
    expect(limit).toBeGreaterThan(3 * 1024 * 1024);
    expect(limit).toBeLessThanOrEqual(4 * 1024 * 1024 - 64 * 1024);
  });

  for (const count of [1, 64, 500]) {
    it(`BatchUpdateBlobs then BatchReadBlobs of ${count} blob(s) totalling exactly the advertised limit`, async () => {
      const blobs = blobsTotalling(limit, count, count * 1000);
      expect(blobs.reduce((n, b) => n + b.length, 0)).toBe(limit);
      const up: any = await call(cas, 'BatchUpdateBlobs', { requests: blobs.map((b) => ({ digest: digestOf(b), data: b })) });
      expect(up.responses.map((r: any) => r.status?.code ?? 0)).toEqual(blobs.map(() => OK));
      const read: any = await call(cas, 'BatchReadBlobs', { digests: blobs.map(digestOf) });
      expect(read.responses.map((r: any) => r.status?.code ?? 0)).toEqual(blobs.map(() => OK));
      read.responses.forEach((r: any, i: number) => expect(Buffer.from(r.data).equals(blobs[i]!), `blob ${i}`).toBe(true));
    });
  }

  it('never answers more than such a client receives: too many tiny blobs for one response are refused, naming the sizes', async () => {
    // 8,000 blobs of ~500 bytes: within the limit in blob bytes, over 4 MiB with a digest and status each.
    const blobs = blobsTotalling(limit - 100_000, 8000, 90_000);
    for (let k = 0; k < blobs.length; k += 2000) {
      const up: any = await call(cas, 'BatchUpdateBlobs', { requests: blobs.slice(k, k + 2000).map((b) => ({ digest: digestOf(b), data: b })) });
      expect(up.responses.every((r: any) => (r.status?.code ?? 0) === OK)).toBe(true);
    }
    await expectGrpcError(call(cas, 'BatchReadBlobs', { digests: blobs.map(digestOf) }), grpc.status.INVALID_ARGUMENT, 'fewer blobs', '8000 blobs');
    const half: any = await call(cas, 'BatchReadBlobs', { digests: blobs.slice(0, 4000).map(digestOf) });
    expect(half.responses).toHaveLength(4000);
  });
});
