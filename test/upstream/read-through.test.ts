import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_UPSTREAM, type Config } from '../../src/config/config.js';
import { Digest } from '../../src/digest/digest.js';
import { statusFromMessage } from '../../src/services/admin-messages.js';
import { renderPlain } from '../../src/status/render-plain.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { blobName, bsRead, bsWrite, bytes, call, digestOf, expectGrpcError } from '../helpers/storage.js';
import { waitFor } from '../helpers/wait.js';

const NOT_FOUND = grpc.status.NOT_FOUND;
const URN = 'urn:fdc:buildstream.build:2020:artifact:proj/elem.bst/';
let seed = 7000;
const newAction = (): { hash: string; sizeBytes: number } => digestOf(Buffer.from(`upstream action ${seed++}`));

type Clients = TestDaemon['clients'];
const upload = async (c: Clients, ...blobs: Buffer[]): Promise<void> => {
  const res: any = await call(c.cas, 'BatchUpdateBlobs', { requests: blobs.map((b) => ({ digest: digestOf(b), data: b })) });
  for (const r of res.responses) expect(r.status?.code ?? 0).toBe(0);
};
const missing = async (c: Clients, ...blobs: Buffer[]): Promise<string[]> => {
  const res: any = await call(c.cas, 'FindMissingBlobs', { blobDigests: blobs.map(digestOf) });
  return res.missingBlobDigests.map((d: any) => d.hash);
};
const localHas = (d: TestDaemon, blob: Buffer): boolean => d.daemon.casBase.record(Digest.compute(blob)) !== undefined;

/**
 * Two real daemons: a workstation (W) in front of an upstream reexec (U), both on ephemeral
 * loopback ports. (test/e2e/upstream-netns.test.ts puts the upstream in its own network
 * namespace.)
 */
describe('reexec in front of an upstream reexec', () => {
  let up: TestDaemon;
  let ws: TestDaemon;
  let upPort: number;
  let upDataDir: string;
  const upstreamUrl = (): string => `grpc://127.0.0.1:${upPort}`;
  const queue = () => ws.daemon.storage.upstream!.queue!;
  const stats = () => ws.daemon.storage.upstream!.stats;

  beforeAll(async () => {
    up = await startTestDaemon();
    upPort = Number(up.address.split(':')[1]);
    upDataDir = up.dataDir;
    ws = await startTestDaemon((c) => {
      c.upstream = { ...DEFAULT_UPSTREAM, url: upstreamUrl(), callTimeoutSeconds: 5, retry: { initialSeconds: 0.05, maxSeconds: 0.5 } };
    });
  });
  afterAll(async () => {
    await ws?.stop();
    await up?.stop();
  });

  it('FindMissingBlobs: only what neither holds is missing', async () => {
    const onlyUp = bytes(3000, 1);
    const onlyWs = bytes(3000, 2);
    const neither = bytes(3000, 3);
    await upload(up.clients, onlyUp);
    await upload(ws.clients, onlyWs);
    expect(await missing(ws.clients, onlyUp, onlyWs, neither)).toEqual([digestOf(neither).hash]);
    // Asking did not copy anything: blobs come when read.
    expect(localHas(ws, onlyUp)).toBe(false);
  });

  it('reads a local miss through from the upstream (batch and ByteStream, small and large) and keeps it', async () => {
    const small = bytes(10_000, 11);
    const large = bytes(9 * 1024 * 1024 + 17, 12);
    await upload(up.clients, small);
    expect(await bsWrite(up.clients.byteStream, large)).toMatchObject({ committedSize: large.length });
    const before = { ...stats().cas };
    const res: any = await call(ws.clients.cas, 'BatchReadBlobs', { digests: [digestOf(small)] });
    expect(res.responses[0].status?.code ?? 0).toBe(0);
    expect(Buffer.from(res.responses[0].data).equals(small)).toBe(true);
    const got = await bsRead(ws.clients.byteStream, blobName(digestOf(large)));
    expect(got.equals(large)).toBe(true);
    // A partial read of a filled blob is served locally.
    expect((await bsRead(ws.clients.byteStream, blobName(digestOf(large)), 1000, 10)).equals(large.subarray(1000, 1010))).toBe(true);
    await waitFor('the small blob read through to be kept locally (stored behind the answer)', () => localHas(ws, small));
    expect(localHas(ws, large)).toBe(true);
    expect(stats().cas.upstream - before.upstream).toBe(2);
    expect(stats().cas.local).toBeGreaterThan(before.local);
    expect(stats().bytesDown).toBeGreaterThanOrEqual(small.length + large.length);
  });

  it('answers a blob neither holds as NOT_FOUND', async () => {
    const absent = bytes(500, 13);
    const res: any = await call(ws.clients.cas, 'BatchReadBlobs', { digests: [digestOf(absent)] });
    expect(res.responses[0].status.code).toBe(NOT_FOUND);
    await expect(bsRead(ws.clients.byteStream, blobName(digestOf(absent)))).rejects.toMatchObject({ code: NOT_FOUND });
  });

  it('reads action results through, blobs and all', async () => {
    const out = bytes(4000, 21);
    await upload(up.clients, out);
    const a = newAction();
    await call(up.clients.actionCache, 'UpdateActionResult', { actionDigest: a, actionResult: { exitCode: 0, outputFiles: [{ path: 'out', digest: digestOf(out) }] } });
    const got: any = await call(ws.clients.actionCache, 'GetActionResult', { actionDigest: a });
    expect(got.outputFiles[0].digest).toEqual(digestOf(out));
    expect(stats().ac.upstream).toBeGreaterThanOrEqual(1);
    // Kept locally (committed behind the answer): a later lookup is a local hit.
    const local = stats().ac.local;
    await waitFor('a lookup of the entry to be a local hit', async () => {
      await call(ws.clients.actionCache, 'GetActionResult', { actionDigest: a });
      return stats().ac.local > local;
    });
    await expectGrpcError(call(ws.clients.actionCache, 'GetActionResult', { actionDigest: newAction() }), NOT_FOUND);
  });

  it('reads Remote Asset bindings through', async () => {
    const blob = bytes(2500, 31);
    await upload(up.clients, blob);
    const uri = `${URN}${seed++}`;
    await call(up.clients.push, 'PushBlob', { uris: [uri], blobDigest: digestOf(blob) });
    const res: any = await call(ws.clients.fetch, 'FetchBlob', { uris: [uri] });
    expect(res.blobDigest).toEqual(digestOf(blob));
    expect(stats().assets.upstream).toBeGreaterThanOrEqual(1);
    await expectGrpcError(call(ws.clients.fetch, 'FetchBlob', { uris: [`${URN}absent-${seed++}`] }), NOT_FOUND);
  });

  it('writes blobs, action results and asset pushes behind to the upstream, blobs first', async () => {
    const small = bytes(6000, 41);
    const large = bytes(6 * 1024 * 1024, 42);
    const out = bytes(7000, 43);
    await upload(ws.clients, small, out);
    await bsWrite(ws.clients.byteStream, large);
    const a = newAction();
    await call(ws.clients.actionCache, 'UpdateActionResult', { actionDigest: a, actionResult: { exitCode: 0, outputFiles: [{ path: 'o', digest: digestOf(out) }] } });
    const uri = `${URN}${seed++}`;
    await call(ws.clients.push, 'PushBlob', { uris: [uri], blobDigest: digestOf(small) });
    await waitFor('the upload queue to drain', () => queue().length === 0);
    await queue().whenIdle();
    expect(await missing(up.clients, small, large, out)).toEqual([]);
    const got: any = await call(up.clients.actionCache, 'GetActionResult', { actionDigest: a });
    expect(got.outputFiles[0].digest).toEqual(digestOf(out));
    const asset: any = await call(up.clients.fetch, 'FetchBlob', { uris: [uri] });
    expect(asset.blobDigest).toEqual(digestOf(small));
    expect(queue().status()).toMatchObject({ blobs: 0, actionResults: 0, assets: 0, dropped: 0, failed: 0 });
    expect(stats().bytesUp).toBeGreaterThanOrEqual(large.length);
  });

  it('shows the upstream in reexec status (plain and --json) and in the Prometheus metrics', async () => {
    const snapshot = statusFromMessage(await call(ws.clients.admin, 'GetStatus', {}));
    const u = snapshot.upstream!;
    expect(u).toMatchObject({ url: upstreamUrl(), state: 'up', execEnabled: true });
    expect(u.cas.upstream).toBeGreaterThan(0);
    expect(u.ac.upstream).toBeGreaterThan(0);
    expect(u.assets.upstream).toBeGreaterThan(0);
    expect(u.bytesDown).toBeGreaterThan(0);
    expect(u.bytesUp).toBeGreaterThan(0);
    expect(u.queue).toMatchObject({ blobs: 0, actionResults: 0, assets: 0, dropped: 0, failed: 0 });
    expect(u.queue!.done).toBeGreaterThan(0);
    const text = renderPlain(snapshot);
    expect(text).toContain(`Upstream: ${upstreamUrl()} up`);
    expect(text).toMatch(/upload queue {2}empty · \d+ done, 0 dropped, 0 failed/);
    const metrics = await ws.daemon.telemetry.registry.metrics();
    expect(metrics).toContain(`reexec_upstream_up{url="${upstreamUrl()}"} 1`);
    expect(metrics).toMatch(/reexec_upstream_lookups_total\{store="cas",answer="upstream"\} [1-9]/);
    expect(metrics).toMatch(/reexec_upstream_bytes_total\{direction="up"\} [1-9]/);
    expect(metrics).toContain('reexec_upstream_queue_items{kind="blob"} 0');
    // A daemon without an upstream says nothing of one.
    expect(statusFromMessage(await call(up.clients.admin, 'GetStatus', {})).upstream).toBeUndefined();
  });

  it('with the upstream gone: local hits go on, misses answer at once as misses, uploads wait and drain when it is back', async () => {
    const kept = bytes(3000, 51);
    await upload(ws.clients, kept);
    await waitFor('the upload queue to drain', () => queue().length === 0);
    up.clients.close();
    await up.daemon.stop(1000);

    const fresh = bytes(3300, 52);
    await upload(ws.clients, fresh);
    // The failed attempt marks the upstream down; the upload stays queued.
    await waitFor('the upstream to be seen down', () => ws.daemon.upstream!.health().state === 'down');
    expect(queue().length).toBe(1);
    expect(ws.daemon.upstream!.health().lastError).toContain(upstreamUrl());

    expect(await missing(ws.clients, kept, fresh)).toEqual([]);
    const hit: any = await call(ws.clients.cas, 'BatchReadBlobs', { digests: [digestOf(kept)] });
    expect(Buffer.from(hit.responses[0].data).equals(kept)).toBe(true);
    const absent = bytes(100, 53);
    expect(await missing(ws.clients, absent)).toEqual([digestOf(absent).hash]);
    const miss: any = await call(ws.clients.cas, 'BatchReadBlobs', { digests: [digestOf(absent)] });
    expect(miss.responses[0].status.code).toBe(NOT_FOUND);
    await expectGrpcError(call(ws.clients.actionCache, 'GetActionResult', { actionDigest: newAction() }), NOT_FOUND);
    expect(stats().cas.upstreamDown).toBeGreaterThan(0);

    up = await startTestDaemon((c) => {
      c.listen = [`127.0.0.1:${upPort}`];
    }, upDataDir);
    await waitFor('the upstream to be seen up again', () => ws.daemon.upstream!.health().state === 'up');
    await waitFor('the queued upload to drain', () => queue().length === 0);
    expect(await missing(up.clients, fresh)).toEqual([]);
    // Misses go to the upstream again.
    const later = bytes(2000, 54);
    await upload(up.clients, later);
    expect(await missing(ws.clients, later)).toEqual([]);
  });
});

describe('the write-behind queue', () => {
  it('survives a restart: uploads queued while the upstream was down are sent by the next run', async () => {
    const up = await startTestDaemon();
    const port = Number(up.address.split(':')[1]);
    const upDir = up.dataDir;
    up.clients.close();
    await up.daemon.stop(1000);
    const wsDir = mkdtempSync(join(tmpdir(), 'reexec-ws-'));
    const withUpstream = (c: Config): void => {
      c.upstream = { ...DEFAULT_UPSTREAM, url: `grpc://127.0.0.1:${port}`, retry: { initialSeconds: 0.05, maxSeconds: 0.2 } };
    };
    let ws = await startTestDaemon(withUpstream, wsDir);
    const blob = bytes(5000, 61);
    await upload(ws.clients, blob);
    await waitFor('the upload to be queued', () => ws.daemon.storage.upstream!.queue!.length === 1);
    expect(ws.daemon.upstream!.health().state).toBe('down');
    await ws.stop();

    const upAgain = await startTestDaemon((c) => {
      c.listen = [`127.0.0.1:${port}`];
    }, upDir);
    ws = await startTestDaemon(withUpstream, wsDir);
    try {
      await waitFor('the queue left by the last run to drain', () => ws.daemon.storage.upstream!.queue!.length === 0);
      expect(await missing(upAgain.clients, blob)).toEqual([]);
      expect(ws.daemon.storage.upstream!.queue!.status()).toMatchObject({ done: 1, dropped: 0, failed: 0 });
    } finally {
      await ws.stop();
      await upAgain.stop();
      rmSync(wsDir, { recursive: true, force: true });
      rmSync(upDir, { recursive: true, force: true });
    }
  });
});
