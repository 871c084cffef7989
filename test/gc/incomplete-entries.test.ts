import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { adminCollect } from '../helpers/gc.js';
import { bytes, call, digestOf, expectGrpcError } from '../helpers/storage.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * An action result or asset whose blobs were evicted is never served, and the first lookup
 * that finds it incomplete deletes it: uploading the blobs again does not bring it back (the
 * client stores a new entry). Entries stored within the grace period are spared: a client may
 * store one before its blobs (covered by test/integration: "a hit once it is there").
 */
describe('entries whose blobs were evicted', () => {
  let d: TestDaemon;
  beforeAll(async () => {
    d = await startTestDaemon((c) => {
      c.storage.gracePeriodSeconds = 0;
      c.execution.enabled = false;
    });
  });
  afterAll(() => d?.stop());

  const upload = async (...blobs: Buffer[]) => {
    const res: any = await call(d.clients.cas, 'BatchUpdateBlobs', { requests: blobs.map((b) => ({ digest: digestOf(b), data: b })) });
    expect(res.responses.every((r: any) => !r.status?.code)).toBe(true);
  };

  it('are misses, and are deleted when found so', async () => {
    const out = bytes(1000, 1);
    const artifact = bytes(1000, 2);
    await upload(out, artifact);
    const action = digestOf(Buffer.from(`action ${Math.random()}`));
    await call(d.clients.actionCache, 'UpdateActionResult', { actionDigest: action, actionResult: { exitCode: 0, outputFiles: [{ path: 'o', digest: digestOf(out) }] } });
    const uri = `urn:test:${Math.random()}`;
    await call(d.clients.push, 'PushBlob', { uris: [uri], blobDigest: digestOf(artifact) });
    expect(((await call(d.clients.fetch, 'FetchBlob', { uris: [uri] })) as any).blobDigest).toEqual(digestOf(artifact));
    expect(((await call(d.clients.actionCache, 'GetActionResult', { actionDigest: action })) as any).exitCode).toBe(0);

    await sleep(1100);
    const summary = await adminCollect(d, { targetBytes: 0 });
    expect(summary.after.count).toBe(0);
    await expectGrpcError(call(d.clients.actionCache, 'GetActionResult', { actionDigest: action }), grpc.status.NOT_FOUND);
    await expectGrpcError(call(d.clients.fetch, 'FetchBlob', { uris: [uri] }), grpc.status.NOT_FOUND);

    // The blobs come back; the entries do not: they were deleted when found incomplete.
    await upload(out, artifact);
    await expectGrpcError(call(d.clients.actionCache, 'GetActionResult', { actionDigest: action }), grpc.status.NOT_FOUND);
    await expectGrpcError(call(d.clients.fetch, 'FetchBlob', { uris: [uri] }), grpc.status.NOT_FOUND);
  });
});
