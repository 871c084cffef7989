import * as grpc from '@grpc/grpc-js';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../helpers/wait.js';
import { treeFromDirectory } from '../../src/client/merkle.js';
import { Digest } from '../../src/digest/digest.js';
import { findBubblewrap } from '../../src/runner/bubblewrap-runner.js';
import { BUSYBOX, buildStreamReadOnlyRoot, makeBusyboxRoot } from '../helpers/busybox-root.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { execute, readBlob, uploadAction, uploadTree } from '../helpers/exec-client.js';
import { bsWrite, bytes, call, digestOf, expectGrpcError } from '../helpers/storage.js';
import { adminCollect } from '../helpers/gc.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function missing(d: TestDaemon, digests: Array<{ hash: string; sizeBytes: number }>): Promise<string[]> {
  const res: any = await call(d.clients.cas, 'FindMissingBlobs', { blobDigests: digests });
  return res.missingBlobDigests.map((m: any) => m.hash);
}

/** Every blob an ActionResult references directly. */
const resultBlobs = (r: any): Array<{ hash: string; sizeBytes: number }> =>
  [...(r.outputFiles ?? []).map((f: any) => f.digest), r.stdoutDigest, r.stderrDigest].filter((x) => x?.hash).map((x) => ({ hash: x.hash, sizeBytes: Number(x.sizeBytes) }));

/**
 * Filling a daemon past its budget with real uploads (BatchUpdateBlobs, ByteStream) and
 * action results (UpdateActionResult): background eviction brings the CAS from the high
 * watermark to the low one, taking the least recently used blobs; what clients used lately,
 * and every blob of every action result still served, remain.
 */
describe('eviction past the high watermark', () => {
  let d: TestDaemon;
  beforeAll(async () => {
    d = await startTestDaemon((c) => {
      c.storage.maxBytes = { bytes: 4 * MiB };
      c.storage.highWatermark = { share: 0.9 };
      c.storage.lowWatermark = { share: 0.65 };
      c.storage.hardLimit = { share: 1.5 };
      // No grace period: access times alone (a second apart) decide what goes.
      c.storage.gracePeriodSeconds = 0;
      c.execution.enabled = false;
    });
  });
  afterAll(() => d?.stop());

  it('lands between the marks, keeping what was used lately and every blob of every hit', async () => {
    // The 14 old blobs nobody used lately (1400 KiB) are more than eviction must take.
    const low = 0.65 * 4 * MiB;
    const high = 0.9 * 4 * MiB;
    // 1. Old: 20 blobs of 100 KiB, and 5 action results over them (2 outputs and stdout each).
    const old = Array.from({ length: 20 }, (_, i) => bytes(100 * KiB, i + 1));
    const upload: any = await call(d.clients.cas, 'BatchUpdateBlobs', { requests: old.map((b) => ({ digest: digestOf(b), data: b })) });
    expect(upload.responses.every((r: any) => !r.status?.code)).toBe(true);
    const actions = Array.from({ length: 5 }, (_, i) => {
      const action = digestOf(Buffer.from(`action ${i} ${Math.random()}`));
      const result = {
        exitCode: 0,
        outputFiles: [
          { path: `out/a${i}`, digest: digestOf(old[i * 4]!) },
          { path: `out/b${i}`, digest: digestOf(old[i * 4 + 1]!) },
        ],
        stdoutDigest: digestOf(old[i * 4 + 2]!),
      };
      return { action, result };
    });
    for (const a of actions) await call(d.clients.actionCache, 'UpdateActionResult', { actionDigest: a.action, actionResult: a.result });
    expect(d.daemon.casBase.usage().bytes).toBe(2000 * KiB);

    // 2. A second later, a client uses some of them: blobs 3, 7, 11 read, and action 4 hit.
    await sleep(1100);
    const readLately = [3, 7, 11].map((i) => old[i]!);
    const read: any = await call(d.clients.cas, 'BatchReadBlobs', { digests: readLately.map(digestOf) });
    expect(read.responses.every((r: any) => !r.status?.code)).toBe(true);
    const hit: any = await call(d.clients.actionCache, 'GetActionResult', { actionDigest: actions[4]!.action });
    expect(hit.exitCode).toBe(0);

    // 3. A second later, new uploads through ByteStream take the CAS past the high watermark.
    await sleep(1100);
    const fresh = Array.from({ length: 10 }, (_, i) => bytes(200 * KiB, 100 + i));
    for (const b of fresh) await bsWrite(d.clients.byteStream, b);
    await waitFor('eviction brings the CAS under the low watermark', () => d.daemon.casBase.usage().bytes <= low);
    const after = d.daemon.casBase.usage().bytes;
    // Between the marks: at the low one, within one blob (LRU takes what it must, no more).
    expect(after).toBeLessThanOrEqual(low);
    expect(after).toBeGreaterThan(low - 200 * KiB);
    expect(after).toBeLessThan(high);

    // What was used lately stayed; so did everything newer.
    expect(await missing(d, [...readLately, ...fresh].map(digestOf))).toEqual([]);
    expect(await missing(d, resultBlobs(actions[4]!.result))).toEqual([]);
    // The oldest went.
    expect((await missing(d, old.map(digestOf))).length).toBeGreaterThan(0);

    // Every action result is either a hit with every blob present, or a miss; never a hit
    // pointing at an evicted blob.
    let hits = 0;
    for (const a of actions) {
      const res: any = await call(d.clients.actionCache, 'GetActionResult', { actionDigest: a.action }).catch((e: grpc.ServiceError) => e);
      if (res instanceof Error) {
        expect((res as grpc.ServiceError).code).toBe(grpc.status.NOT_FOUND);
        continue;
      }
      hits++;
      expect(await missing(d, resultBlobs(res))).toEqual([]);
    }
    expect(hits).toBeGreaterThanOrEqual(1);
    expect(hits).toBeLessThan(actions.length);
  }, 60_000);
});

const noSandbox = !BUSYBOX ? 'busybox-static (apt-get install busybox-static)' : !findBubblewrap() ? 'bubblewrap (apt-get install bubblewrap)' : undefined;

/**
 * Nothing an action needs is evicted while it is queued or running, even by `reexec gc
 * --target 0`: the action and the one queued behind it finish with the right outputs.
 */
describe.skipIf(noSandbox)(`eviction while actions run${noSandbox ? ` (skipped: install ${noSandbox})` : ''}`, () => {
  let d: TestDaemon;
  const roots: string[] = [];
  beforeAll(async () => {
    d = await startTestDaemon((c) => {
      c.storage.maxBytes = { bytes: 64 * MiB };
      c.storage.gracePeriodSeconds = 0;
      c.execution.pools = [{ name: 'native', isa: ['x86-64'], slots: 1 }];
    });
  });
  afterAll(async () => {
    await d?.stop();
    for (const r of roots) rmSync(r, { recursive: true, force: true });
  });

  const inputRoot = async (seed: number): Promise<{ root: Digest; big: Buffer }> => {
    const big = bytes(1 * MiB + seed, seed);
    const host = makeBusyboxRoot((root) => {
      mkdirSync(join(root, 'work', 'in'), { recursive: true });
      writeFileSync(join(root, 'work', 'in', 'big.bin'), big);
    });
    roots.push(host);
    // A read-only sysroot (staged through the staging cache) with a writable work dir.
    const tree = await treeFromDirectory(host, { directoryProperties: buildStreamReadOnlyRoot });
    await uploadTree(d.clients, tree);
    return { root: tree.root, big };
  };

  it('keeps the inputs of the running and the queued action; evicts them once they are done', async () => {
    const a = await inputRoot(1);
    const b = await inputRoot(2);
    const running = await uploadAction(d.clients, a.root, { args: ['sh', '-c', 'sleep 4; md5sum in/big.bin > out.txt'], workingDirectory: 'work', outputPaths: ['out.txt'] });
    const queued = await uploadAction(d.clients, b.root, { args: ['sh', '-c', 'md5sum in/big.bin > out.txt'], workingDirectory: 'work', outputPaths: ['out.txt'] });
    const first = execute(d.clients, running);
    await waitFor('the first action runs', () => (d.daemon.execution?.workers.running.size ?? 0) === 1);
    const second = execute(d.clients, queued);
    await waitFor('the second action is queued', () => Object.values(d.daemon.execution!.scheduler.queueDepths()).reduce((x, y) => x + y, 0) === 1);
    // Unrelated blobs, a second older than now.
    const junk = Array.from({ length: 8 }, (_, i) => bytes(256 * KiB, 500 + i));
    await call(d.clients.cas, 'BatchUpdateBlobs', { requests: junk.map((j) => ({ digest: digestOf(j), data: j })) });
    await sleep(1100);

    const summary = await adminCollect(d, { targetBytes: 0 });
    expect(summary.keptInUse.blobs).toBeGreaterThan(0);
    // The running action's files in the staging cache stay too.
    expect(summary.stagingCache.keptInUse).toBeGreaterThan(0);
    expect(await missing(d, junk.map(digestOf))).toHaveLength(junk.length);
    expect(await missing(d, [digestOf(a.big), digestOf(b.big), running.toProto(), queued.toProto()])).toEqual([]);

    for (const [p, input] of [
      [first, a],
      [second, b],
    ] as const) {
      const { response, error } = await p;
      expect(error).toBeUndefined();
      expect(response!.status?.code ?? 0, response!.status?.message ?? '').toBe(0);
      expect(response!.result!.exitCode).toBe(0);
      const out = (await readBlob(d.clients, response!.result!.outputFiles![0]!.digest)).toString();
      expect(out).toContain('in/big.bin');
      expect(input.big.length).toBeGreaterThan(MiB);
    }

    // Done: their inputs are no one's any more.
    await sleep(1100);
    const last = await adminCollect(d, { targetBytes: 0 });
    expect(await missing(d, [digestOf(a.big), digestOf(b.big)])).toHaveLength(2);
    expect(last.stagingCache.freedEntries).toBe(last.stagingCache.entries);
    expect(last.stagingCache.freedEntries).toBeGreaterThan(0);
    // And the action results whose outputs went are misses.
    await expectGrpcError(call(d.clients.actionCache, 'GetActionResult', { actionDigest: running.toProto() }), grpc.status.NOT_FOUND);
  }, 120_000);
});
