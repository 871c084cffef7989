import * as http2 from 'node:http2';
import { randomUUID } from 'node:crypto';
import { rmSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call } from '../../src/client/reapi-client.js';
import { treeFromDirectory } from '../../src/client/merkle.js';
import { findBubblewrap } from '../../src/runner/bubblewrap-runner.js';
import { BUSYBOX, makeBusyboxRoot } from '../helpers/busybox-root.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { execute, uploadAction, uploadTree } from '../helpers/exec-client.js';
import { blobName, bsWrite, bytes, digestOf, expectGrpcError, uploadName } from '../helpers/storage.js';
import { waitFor } from '../helpers/wait.js';
import { caseTally } from './tally.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A Write stream that sent its first `n` bytes and then stops (a slow or stalled client). */
function stalledWrite(client: grpc.Client & Record<string, any>, data: Buffer, n: number, uuid = randomUUID()) {
  const d = digestOf(data);
  let settle: (v: { err?: grpc.ServiceError; res?: any }) => void = () => undefined;
  const done = new Promise<{ err?: grpc.ServiceError; res?: any }>((r) => (settle = r));
  const stream = client.Write((err: grpc.ServiceError | null, res: any) => settle(err ? { err } : { res }));
  stream.on('error', () => undefined);
  stream.write({ resourceName: uploadName(d, uuid), writeOffset: 0, data: data.subarray(0, n) });
  return { stream, done, name: uploadName(d, uuid) };
}

describe('abuse limits: calls per client, idle calls', () => {
  const tally = caseTally('abuse limits');
  let d: TestDaemon;
  beforeAll(async () => {
    d = await startTestDaemon((c) => {
      c.limits = { ...c.limits, maxCallsPerClient: 4, idleTimeoutSeconds: 1 };
    });
  });
  afterAll(() => d?.stop());

  it('refuses calls beyond max-calls-per-client with RESOURCE_EXHAUSTED, and takes them again once some end', async () => {
    tally.add(2);
    const held = [0, 1, 2, 3].map((i) => stalledWrite(d.clients.byteStream, bytes(100, 50 + i), 10));
    const probe = (): Promise<grpc.ServiceError | undefined> =>
      call(d.clients.cas, 'FindMissingBlobs', { blobDigests: [] }).then(
        () => undefined,
        (e: grpc.ServiceError) => e,
      );
    // Once the four stalled uploads are in, a fifth call is refused.
    const err = await waitFor('a fifth call to be refused', async () => {
      const e = await probe();
      return e?.code === grpc.status.RESOURCE_EXHAUSTED ? e : undefined;
    });
    expect(err.details).toContain('too many calls');
    expect(err.details).toContain('4');
    held[0]!.stream.cancel();
    await waitFor('a call to be taken again', async () => (await probe()) === undefined);
    for (const h of held) h.stream.cancel();
    await waitFor('the stalled calls to be gone', async () => {
      const all = await Promise.all([probe(), probe(), probe(), probe()]);
      return all.every((e) => e === undefined);
    });
  });

  it('ends a stalled upload after the idle timeout, keeping its bytes for a resumed Write', async () => {
    tally.add(1);
    const data = bytes(4096, 7);
    const w = stalledWrite(d.clients.byteStream, data, 1000);
    const { err } = await w.done;
    expect(err?.code, err?.details).toBe(grpc.status.DEADLINE_EXCEEDED);
    expect(err?.details).toContain('idle');
    const status: any = await call(d.clients.byteStream, 'QueryWriteStatus', { resourceName: w.name });
    expect(Number(status.committedSize)).toBe(1000);
    // The client comes back and finishes from where the server stopped.
    await new Promise<void>((resolve, reject) => {
      const s = d.clients.byteStream.Write((e: grpc.ServiceError | null, res: any) => (e ? reject(e) : (expect(Number(res.committedSize)).toBe(4096), resolve())));
      s.write({ resourceName: w.name, writeOffset: 1000, data: data.subarray(1000), finishWrite: true });
      s.end();
    });
  });

  it('lets a slow-drip upload live as long as something arrives within the idle timeout', async () => {
    tally.add(1);
    const data = bytes(800, 8);
    const d0 = digestOf(data);
    const name = uploadName(d0);
    const res = await new Promise<any>((resolve, reject) => {
      const s = d.clients.byteStream.Write((e: grpc.ServiceError | null, r: any) => (e ? reject(e) : resolve(r)));
      (async () => {
        for (let off = 0; off < 800; off += 32) {
          s.write({ resourceName: off === 0 ? name : '', writeOffset: off, data: data.subarray(off, off + 32), finishWrite: off + 32 >= 800 });
          await sleep(100); // 25 × 100 ms: longer than the 1 s timeout in total, never near it between two
        }
        s.end();
      })().catch(reject);
    });
    expect(Number(res.committedSize)).toBe(800);
  });

  it('ends a request whose message never comes (headers only, over raw HTTP/2)', async () => {
    tally.add(2);
    const session = http2.connect(`http://${d.address}`);
    session.on('error', () => undefined);
    try {
      for (const path of ['/build.bazel.remote.execution.v2.ContentAddressableStorage/FindMissingBlobs', '/google.bytestream.ByteStream/Write']) {
        const status = await new Promise<string | undefined>((resolve) => {
          const req = session.request({ ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers' }, { endStream: false });
          // Trailers-only responses carry the status in the headers.
          req.on('response', (h) => h['grpc-status'] !== undefined && resolve(h['grpc-status'] as string));
          req.on('trailers', (h) => resolve(h['grpc-status'] as string));
          req.on('data', () => undefined);
          req.on('error', () => resolve('stream error'));
          req.on('close', () => resolve(undefined));
        });
        expect(status, path).toBe(String(grpc.status.DEADLINE_EXCEEDED));
      }
    } finally {
      session.close();
    }
  });

  it('ends a download the client stopped reading', async () => {
    tally.add(1);
    const data = bytes(40 * 1024 * 1024, 9);
    await bsWrite(d.clients.byteStream, data);
    const outcome = await new Promise<{ received: number; code?: number }>((resolve) => {
      let received = 0;
      const s = d.clients.byteStream.Read({ resourceName: blobName(digestOf(data)) });
      s.on('data', (m: { data: Uint8Array }) => {
        received += m.data.byteLength;
        if (received > 1024 * 1024 && !s.isPaused()) {
          s.pause();
          setTimeout(() => s.resume(), 3000);
        }
      });
      s.on('error', (e: grpc.ServiceError) => resolve({ received, code: e.code }));
      s.on('end', () => resolve({ received }));
    });
    // The status cannot pass the unread data: the stream is reset (CANCELLED) instead.
    expect([grpc.status.DEADLINE_EXCEEDED, grpc.status.CANCELLED]).toContain(outcome.code);
    expect(outcome.received).toBeLessThan(data.length);
  });

  it('an abandoned upload (client gone mid-stream) leaves the daemon serving and the upload resumable', async () => {
    tally.add(1);
    const data = bytes(3000, 10);
    const w = stalledWrite(d.clients.byteStream, data, 1500);
    const committed = async (): Promise<number> => Number(((await call(d.clients.byteStream, 'QueryWriteStatus', { resourceName: w.name })) as any).committedSize);
    await waitFor('the first 1500 bytes to arrive', async () => (await committed()) === 1500);
    w.stream.cancel();
    await w.done;
    expect(await committed()).toBe(1500);
    const caps: any = await call(d.clients.capabilities, 'GetCapabilities', {});
    expect(caps.cacheCapabilities.digestFunctions).toContain(1);
  });
});

const noSandbox = !BUSYBOX ? 'busybox-static' : !findBubblewrap() ? 'bubblewrap' : undefined;

describe.skipIf(noSandbox)(`idle timeout and Execute${noSandbox ? ` (skipped: install ${noSandbox})` : ''}`, () => {
  let d: TestDaemon;
  let hostRoot: string;
  beforeAll(async () => {
    d = await startTestDaemon((c) => {
      c.limits = { ...c.limits, idleTimeoutSeconds: 1 };
    });
    hostRoot = makeBusyboxRoot();
  });
  afterAll(async () => {
    await d?.stop();
    if (hostRoot) rmSync(hostRoot, { recursive: true, force: true });
  });

  it('never cuts a running Execute stream, however long the action is quiet', async () => {
    const tree = await treeFromDirectory(hostRoot);
    await uploadTree(d.clients, tree);
    const action = await uploadAction(d.clients, tree.root, { args: ['sh', '-c', 'sleep 3; echo slept'], doNotCache: true });
    const { response, error } = await execute(d.clients, action);
    expect(error, error?.details).toBeUndefined();
    expect(response!.status?.code ?? 0).toBe(0);
    expect(response!.result!.exitCode).toBe(0);
  });
});
