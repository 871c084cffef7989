import type * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Digest } from '../../src/digest/digest.js';
import { BLAKE3, SHA256 } from '../../src/digest/digest-function.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { blobName, bsRead, bsWrite, bytes, call, expectGrpcError } from '../helpers/storage.js';

const B3 = 9;
const OK = 0;
const INVALID_ARGUMENT = 3;
const NOT_FOUND = 5;
const MiB = 1024 * 1024;
const EMPTY_BLAKE3 = 'af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262';

const b3 = (data: Uint8Array): { hash: string; sizeBytes: number } => Digest.compute(data, BLAKE3).toProto();
const sha = (data: Uint8Array): { hash: string; sizeBytes: number } => Digest.compute(data, SHA256).toProto();

describe('BLAKE3 digest function', () => {
  let d: TestDaemon;
  const cas = (): grpc.Client & Record<string, any> => d.clients.cas;
  const bs = (): grpc.Client & Record<string, any> => d.clients.byteStream;
  const findMissing = async (digests: Array<{ hash: string; sizeBytes: number }>, digestFunction?: number): Promise<unknown[]> =>
    ((await call(cas(), 'FindMissingBlobs', { blobDigests: digests, digestFunction })) as any).missingBlobDigests;

  beforeAll(async () => {
    d = await startTestDaemon();
  });
  afterAll(() => d.stop());

  it('is advertised after SHA-256, which stays the default', async () => {
    const caps: any = await call(d.clients.capabilities, 'GetCapabilities', { instanceName: '' });
    expect(caps.cacheCapabilities.digestFunctions[0]).toBe(1);
    expect(caps.cacheCapabilities.digestFunctions).toContain(B3);
    expect(caps.executionCapabilities.digestFunction).toBe(1);
  });

  it('BatchUpdateBlobs / BatchReadBlobs / FindMissingBlobs with digest_function=BLAKE3', async () => {
    const a = bytes(1000, 31);
    const b = bytes(70_000, 32);
    const up: any = await call(cas(), 'BatchUpdateBlobs', { requests: [a, b].map((x) => ({ digest: b3(x), data: x })), digestFunction: B3 });
    expect(up.responses.map((r: any) => r.status?.code ?? OK)).toEqual([OK, OK]);
    const absent = b3(bytes(10, 33));
    expect(await findMissing([b3(a), absent, b3(b)], B3)).toEqual([absent]);
    // Without the digest function, the same 64-digit hashes are read as SHA-256: not stored.
    expect(await findMissing([b3(a), b3(b)])).toEqual([b3(a), b3(b)]);
    const read: any = await call(cas(), 'BatchReadBlobs', { digests: [b3(a), b3(b), absent], digestFunction: B3 });
    expect(Buffer.from(read.responses[0].data).equals(a)).toBe(true);
    expect(Buffer.from(read.responses[1].data).equals(b)).toBe(true);
    expect(read.responses[2].status.code).toBe(NOT_FOUND);
  });

  it('refuses a BatchUpdateBlobs blob whose BLAKE3 hash does not match (its SHA-256 hash does not pass for it)', async () => {
    const data = bytes(500, 34);
    const up: any = await call(cas(), 'BatchUpdateBlobs', {
      requests: [
        { digest: b3(bytes(500, 35)), data },
        { digest: sha(data), data },
      ],
      digestFunction: B3,
    });
    expect(up.responses.map((r: any) => r.status?.code ?? OK)).toEqual([INVALID_ARGUMENT, INVALID_ARGUMENT]);
    expect(up.responses[0].status.message).toContain('BLAKE3');
    expect(await findMissing([b3(bytes(500, 35)), sha(data)], B3)).toHaveLength(2);
  });

  it('always has the empty BLAKE3 blob', async () => {
    expect(Digest.empty(BLAKE3).hash).toBe(EMPTY_BLAKE3);
    expect(await findMissing([{ hash: EMPTY_BLAKE3, sizeBytes: 0 }], B3)).toEqual([]);
    expect((await bsRead(bs(), `blobs/blake3/${EMPTY_BLAKE3}/0`)).length).toBe(0);
    // Unlabelled, that hash is a SHA-256 one nobody stored.
    expect(await findMissing([{ hash: EMPTY_BLAKE3, sizeBytes: 0 }])).toHaveLength(1);
  });

  for (const [label, size] of [
    ['small (inline)', 3000],
    ['multi-MiB (file-backed)', 3 * MiB + 17],
  ] as const) {
    it(`ByteStream writes and reads a ${label} blob under blobs/blake3/, resumable names and all`, async () => {
      const data = bytes(size, size === 3000 ? 36 : 37);
      const digest = b3(data);
      expect(await bsWrite(bs(), data, { fn: 'blake3', chunkBytes: 256 * 1024 }, digest)).toEqual({ committedSize: size });
      expect(await findMissing([digest], B3)).toEqual([]);
      expect((await bsRead(bs(), blobName(digest, '', 'blake3'))).equals(data)).toBe(true);
      expect((await bsRead(bs(), blobName(digest, 'main/x', 'blake3'), 1000, 500)).equals(data.subarray(1000, 1500))).toBe(true);
      // The bare name means SHA-256.
      await expectGrpcError(bsRead(bs(), blobName(digest)), NOT_FOUND);
    });

    it(`ByteStream refuses a ${label} blob whose BLAKE3 hash does not match; nothing becomes visible`, async () => {
      const data = bytes(size, 38);
      const claimed = b3(bytes(size, 39));
      const err = await bsWrite(bs(), data, { fn: 'blake3' }, claimed).then(
        () => undefined,
        (e: grpc.ServiceError) => e,
      );
      expect(err?.code).toBe(INVALID_ARGUMENT);
      expect(err?.details).toContain(claimed.hash);
      expect(await findMissing([claimed], B3)).toHaveLength(1);
      // Nor does the data pass under its SHA-256 digest with a blake3/ name.
      const err2 = await bsWrite(bs(), data, { fn: 'blake3' }, sha(data)).then(
        () => undefined,
        (e: grpc.ServiceError) => e,
      );
      expect(err2?.code).toBe(INVALID_ARGUMENT);
    });
  }

  it('stores the same hash text under SHA-256 and BLAKE3 as different blobs', async () => {
    // One content under both functions: two entries, each found only under its own function.
    const x = bytes(2000, 40);
    await bsWrite(bs(), x, { fn: 'blake3' }, b3(x));
    await bsWrite(bs(), x, {}, sha(x));
    expect(b3(x).hash).not.toBe(sha(x).hash);
    expect(await findMissing([b3(x)], B3)).toEqual([]);
    expect(await findMissing([sha(x)], 1)).toEqual([]);
    expect(await findMissing([b3(x)], 1)).toHaveLength(1);
    expect(await findMissing([sha(x)], B3)).toHaveLength(1);
    // A blob stored under SHA-256 only is missing under BLAKE3 with the same hash text.
    const y = bytes(2001, 41);
    await bsWrite(bs(), y, {}, sha(y));
    expect(await findMissing([sha(y)], B3)).toEqual([sha(y)]);
    await expectGrpcError(bsRead(bs(), blobName(sha(y), '', 'blake3')), NOT_FOUND);
    expect((await bsRead(bs(), blobName(sha(y), '', 'sha256'))).equals(y)).toBe(true);
  });

  it('ActionCache and Remote Asset keep BLAKE3 digests apart from SHA-256 ones', async () => {
    const stdout = bytes(100, 42);
    await call(cas(), 'BatchUpdateBlobs', { requests: [{ digest: b3(stdout), data: stdout }], digestFunction: B3 });
    const action = b3(Buffer.from('an action'));
    await call(d.clients.actionCache, 'UpdateActionResult', { actionDigest: action, actionResult: { exitCode: 0, stdoutDigest: b3(stdout) }, digestFunction: B3 });
    const got: any = await call(d.clients.actionCache, 'GetActionResult', { actionDigest: action, digestFunction: B3 });
    expect(got.stdoutDigest).toEqual(b3(stdout));
    await expectGrpcError(call(d.clients.actionCache, 'GetActionResult', { actionDigest: action }), NOT_FOUND);

    const uri = 'https://example.invalid/blake3-asset';
    await call(d.clients.push, 'PushBlob', { uris: [uri], blobDigest: b3(stdout), digestFunction: B3 });
    const fetched: any = await call(d.clients.fetch, 'FetchBlob', { uris: [uri], digestFunction: B3 });
    expect(fetched.blobDigest).toEqual(b3(stdout));
    expect(fetched.digestFunction).toBe(B3);
    await expectGrpcError(call(d.clients.fetch, 'FetchBlob', { uris: [uri] }), NOT_FOUND);
  });
});
