import type * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Digest } from '../../src/digest/digest.js';
import { re } from '../../src/proto.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { bytes, call, digestOf, expectGrpcError } from '../helpers/storage.js';

const EMPTY = { hash: 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855', sizeBytes: 0 };
const OK = 0;
const INVALID_ARGUMENT = 3;
const NOT_FOUND = 5;
const MAX_BATCH = 1024 * 1024;

describe('ContentAddressableStorage', () => {
  let d: TestDaemon;
  const cas = (): grpc.Client & Record<string, any> => d.clients.cas;
  const upload = async (...blobs: Buffer[]): Promise<void> => {
    const res: any = await call(cas(), 'BatchUpdateBlobs', { requests: blobs.map((b) => ({ digest: digestOf(b), data: b })) });
    for (const r of res.responses) expect(r.status?.code ?? 0, r.status?.message).toBe(OK);
  };

  beforeAll(async () => {
    d = await startTestDaemon((c) => {
      c.storage.maxBatchBytes = MAX_BATCH;
    });
  });
  afterAll(() => d.stop());

  describe('FindMissingBlobs', () => {
    it('never reports the empty blob missing, even though nobody uploaded it', async () => {
      const res: any = await call(cas(), 'FindMissingBlobs', { blobDigests: [EMPTY] });
      expect(res.missingBlobDigests).toEqual([]);
    });

    it('reports absent blobs and blobs asked for with the wrong size, not stored ones', async () => {
      const a = bytes(100, 1);
      const b = bytes(100 * 1024, 2);
      await upload(a);
      await upload(b);
      const absent = digestOf(bytes(10, 3));
      const wrongSize = { ...digestOf(a), sizeBytes: 101 };
      const res: any = await call(cas(), 'FindMissingBlobs', { blobDigests: [digestOf(a), absent, EMPTY, digestOf(b), wrongSize] });
      expect(res.missingBlobDigests).toEqual([absent, wrongSize]);
    });

    it('answers an empty request', async () => {
      expect(((await call(cas(), 'FindMissingBlobs', { blobDigests: [] })) as any).missingBlobDigests).toEqual([]);
    });

    it('answers 512 digests at once (BuildStream batches)', async () => {
      const digests = Array.from({ length: 512 }, (_, i) => digestOf(Buffer.from(`blob ${i}`)));
      const res: any = await call(cas(), 'FindMissingBlobs', { blobDigests: digests });
      expect(res.missingBlobDigests).toHaveLength(512);
    });

    it('refuses malformed digests with INVALID_ARGUMENT naming which one', async () => {
      const good = digestOf(Buffer.from('x'));
      await expectGrpcError(call(cas(), 'FindMissingBlobs', { blobDigests: [good, { hash: 'abc', sizeBytes: 3 }] }), INVALID_ARGUMENT, 'blob_digests[1]', 'abc');
      await expectGrpcError(call(cas(), 'FindMissingBlobs', { blobDigests: [{ hash: good.hash, sizeBytes: -5 }] }), INVALID_ARGUMENT, 'blob_digests[0]', '-5');
      await expectGrpcError(call(cas(), 'FindMissingBlobs', { blobDigests: [{ hash: good.hash.toUpperCase(), sizeBytes: 1 }] }), INVALID_ARGUMENT, 'blob_digests[0]');
      await expectGrpcError(call(cas(), 'FindMissingBlobs', { blobDigests: [{}] }), INVALID_ARGUMENT, 'blob_digests[0]');
    });

    it('refuses a malformed instance name, naming it', async () => {
      await expectGrpcError(call(cas(), 'FindMissingBlobs', { instanceName: 'x/blobs', blobDigests: [] }), INVALID_ARGUMENT, 'x/blobs');
    });

    it('shares blobs across instances (content addressing)', async () => {
      const a = bytes(50, 40);
      await call(cas(), 'BatchUpdateBlobs', { instanceName: 'one', requests: [{ digest: digestOf(a), data: a }] });
      const res: any = await call(cas(), 'FindMissingBlobs', { instanceName: 'two/x', blobDigests: [digestOf(a)] });
      expect(res.missingBlobDigests).toEqual([]);
    });
  });

  describe('BatchUpdateBlobs', () => {
    it('gives a status per blob: stored, hash mismatch, size mismatch, malformed digest', async () => {
      const good = bytes(1000, 10);
      const big = bytes(200 * 1024, 11);
      const liar = bytes(1000, 12);
      const short = bytes(1000, 13);
      const res: any = await call(cas(), 'BatchUpdateBlobs', {
        requests: [
          { digest: digestOf(good), data: good },
          { digest: digestOf(liar), data: bytes(1000, 99) },
          { digest: digestOf(short), data: short.subarray(0, 999) },
          { digest: { hash: 'nothex', sizeBytes: 3 }, data: Buffer.from('abc') },
          { digest: digestOf(big), data: big },
        ],
      });
      const codes = res.responses.map((r: any) => r.status?.code ?? 0);
      expect(codes).toEqual([OK, INVALID_ARGUMENT, INVALID_ARGUMENT, INVALID_ARGUMENT, OK]);
      expect(res.responses.map((r: any) => r.digest.hash)).toEqual([digestOf(good).hash, digestOf(liar).hash, digestOf(short).hash, 'nothex', digestOf(big).hash]);
      expect(res.responses[1].status.message).toContain(digestOf(liar).hash);
      expect(res.responses[2].status.message).toContain('999');
      expect(res.responses[3].status.message).toContain('nothex');
      const missing: any = await call(cas(), 'FindMissingBlobs', { blobDigests: [digestOf(good), digestOf(liar), digestOf(short), digestOf(big)] });
      expect(missing.missingBlobDigests).toEqual([digestOf(liar), digestOf(short)]);
    });

    it('accepts an empty batch (a probe)', async () => {
      const res: any = await call(cas(), 'BatchUpdateBlobs', { requests: [] });
      expect(res.responses).toEqual([]);
    });

    it('accepts the empty blob and a blob already present', async () => {
      const a = bytes(300, 14);
      await upload(a);
      const res: any = await call(cas(), 'BatchUpdateBlobs', { requests: [{ digest: EMPTY, data: Buffer.alloc(0) }, { digest: digestOf(a), data: a }] });
      expect(res.responses.map((r: any) => r.status?.code ?? 0)).toEqual([OK, OK]);
    });

    it('accepts the same blob twice in one batch', async () => {
      const a = bytes(100 * 1024, 15);
      const res: any = await call(cas(), 'BatchUpdateBlobs', { requests: [{ digest: digestOf(a), data: a }, { digest: digestOf(a), data: a }] });
      expect(res.responses.map((r: any) => r.status?.code ?? 0)).toEqual([OK, OK]);
      const read: any = await call(cas(), 'BatchReadBlobs', { digests: [digestOf(a)] });
      expect(Buffer.from(read.responses[0].data).equals(a)).toBe(true);
    });

    it('refuses a batch over max_batch_total_size_bytes with INVALID_ARGUMENT, storing nothing', async () => {
      const a = bytes(MAX_BATCH / 2 + 10, 16);
      const b = bytes(MAX_BATCH / 2 + 10, 17);
      await expectGrpcError(
        call(cas(), 'BatchUpdateBlobs', { requests: [{ digest: digestOf(a), data: a }, { digest: digestOf(b), data: b }] }),
        INVALID_ARGUMENT,
        'max_batch_total_size_bytes',
      );
      const missing: any = await call(cas(), 'FindMissingBlobs', { blobDigests: [digestOf(a), digestOf(b)] });
      expect(missing.missingBlobDigests).toHaveLength(2);
    });
  });

  describe('BatchReadBlobs', () => {
    it('returns data per blob and a per-entry NOT_FOUND for absent ones', async () => {
      const a = bytes(500, 20);
      const b = bytes(100 * 1024, 21);
      await upload(a, b);
      const absent = digestOf(bytes(7, 22));
      const res: any = await call(cas(), 'BatchReadBlobs', { digests: [digestOf(a), absent, EMPTY, digestOf(b), { ...digestOf(a), sizeBytes: 499 }] });
      expect(res.responses.map((r: any) => r.status?.code ?? 0)).toEqual([OK, NOT_FOUND, OK, OK, NOT_FOUND]);
      expect(Buffer.from(res.responses[0].data).equals(a)).toBe(true);
      expect(res.responses[1].digest).toEqual(absent);
      expect(res.responses[1].status.message).toContain(absent.hash);
      expect(res.responses[2].data.length).toBe(0);
      expect(Buffer.from(res.responses[3].data).equals(b)).toBe(true);
    });

    it('answers an empty request', async () => {
      const res: any = await call(cas(), 'BatchReadBlobs', { digests: [] });
      expect(res.responses).toEqual([]);
    });

    it('answers a malformed digest with its own INVALID_ARGUMENT, naming it, and serves the rest', async () => {
      const a = bytes(300, 23);
      await upload(a);
      const res: any = await call(cas(), 'BatchReadBlobs', { digests: [EMPTY, { hash: 'zz', sizeBytes: 1 }, digestOf(a), { hash: digestOf(a).hash, sizeBytes: -3 }] });
      expect(res.responses.map((r: any) => r.status?.code ?? 0)).toEqual([OK, INVALID_ARGUMENT, OK, INVALID_ARGUMENT]);
      expect(res.responses[1].digest.hash).toBe('zz');
      expect(res.responses[1].status.message).toContain('digests[1]');
      expect(res.responses[1].status.message).toContain('zz');
      expect(res.responses[3].status.message).toContain('-3');
      expect(Buffer.from(res.responses[2].data).equals(a)).toBe(true);
    });

    it('refuses a batch over max_batch_total_size_bytes as a whole, and an unknown digest function', async () => {
      const a = bytes(MAX_BATCH / 2 + 10, 24);
      await upload(a);
      await expectGrpcError(call(cas(), 'BatchReadBlobs', { digests: [digestOf(a), digestOf(a)] }), INVALID_ARGUMENT, 'max_batch_total_size_bytes');
      await expectGrpcError(call(cas(), 'BatchReadBlobs', { digests: [digestOf(a)], digestFunction: 77 }), INVALID_ARGUMENT, 'digest function');
    });
  });

  describe('GetTree', () => {
    // root ─┬─ a ── c ── d
    //       └─ b ── c (shared)
    const file = (name: string, data: Buffer) => ({ name, digest: digestOf(data), isExecutable: false });
    const f1 = bytes(10, 30);
    const f2 = bytes(20, 31);
    const enc = (dir: re.IDirectory): Buffer => Buffer.from(re.Directory.encode(dir).finish());
    const dDir = enc({ files: [file('deep.txt', f1)] });
    const cDir = enc({ directories: [{ name: 'd', digest: digestOf(dDir) }], files: [file('c.txt', f2)] });
    const aDir = enc({ directories: [{ name: 'c', digest: digestOf(cDir) }] });
    const bDir = enc({ directories: [{ name: 'c', digest: digestOf(cDir) }], files: [file('b.txt', f1)] });
    const root = enc({ directories: [{ name: 'a', digest: digestOf(aDir) }, { name: 'b', digest: digestOf(bDir) }] });
    const all = [root, aDir, bDir, cDir, dDir];
    const hashOf = (dir: re.IDirectory): string => Digest.compute(enc(dir)).hash;

    const getTree = (req: object): Promise<any[]> =>
      new Promise((resolve, reject) => {
        const out: any[] = [];
        const s = cas().GetTree(req);
        s.on('data', (m: any) => out.push(m));
        s.on('error', reject);
        s.on('end', () => resolve(out));
      });

    /** The messages are pages: non-empty tokens on all but the last, directories each once, at most `pageSize` a page. */
    const expectPages = (messages: any[], directories: number, pageSize?: number): void => {
      expect(messages.slice(0, -1).map((m) => m.nextPageToken).filter((t) => !t)).toEqual([]);
      expect(messages.at(-1).nextPageToken).toBe('');
      const dirs = messages.flatMap((m) => m.directories);
      expect(dirs).toHaveLength(directories);
      expect(new Set(dirs.map(hashOf)).size).toBe(directories);
      if (pageSize) for (const m of messages) expect(m.directories.length).toBeLessThanOrEqual(pageSize);
    };
    /** A GetTree from each message's token returns exactly what followed that message. */
    const expectTokensResume = async (req: object, messages: any[]): Promise<void> => {
      for (let k = 0; k < messages.length - 1; k++) {
        const rest = await getTree({ ...req, pageToken: messages[k].nextPageToken });
        expect(rest.flatMap((m) => m.directories).map(hashOf)).toEqual(messages.slice(k + 1).flatMap((m) => m.directories).map(hashOf));
        expect(rest.at(-1).nextPageToken).toBe('');
      }
    };

    beforeAll(async () => {
      await upload(f1, f2, ...all);
    });

    it('returns every directory of a multi-level tree once', async () => {
      const responses = await getTree({ rootDigest: digestOf(root) });
      const dirs = responses.flatMap((r) => r.directories);
      expect(dirs.map(hashOf).sort()).toEqual(all.map((x) => digestOf(x).hash).sort());
      expect(hashOf(dirs[0])).toBe(digestOf(root).hash);
      expect(responses.at(-1).nextPageToken).toBe('');
    });

    it('with page_size: every message is a page of at most page_size, and each token resumes right after its message', async () => {
      for (const pageSize of [1, 2, 3, 5, 6]) {
        const messages = await getTree({ rootDigest: digestOf(root), pageSize });
        expectPages(messages, all.length, pageSize);
        await expectTokensResume({ rootDigest: digestOf(root), pageSize }, messages);
      }
    });

    it('answers NOT_FOUND for a missing root, INVALID_ARGUMENT for a bad page_token', async () => {
      const missing = digestOf(enc({ files: [file('nope', f2)] }));
      await expectGrpcError(getTree({ rootDigest: missing }), NOT_FOUND, missing.hash);
      await expectGrpcError(getTree({ rootDigest: digestOf(root), pageToken: '!!not-ours' }), INVALID_ARGUMENT, 'page_token');
      const [first] = await getTree({ rootDigest: digestOf(root), pageSize: 1 });
      await expectGrpcError(getTree({ rootDigest: digestOf(aDir), pageToken: first.nextPageToken }), INVALID_ARGUMENT, 'page_token', 'another root');
    });

    describe('a tree that needs several messages', () => {
      // 40 directories of ~100 KB each (1,000 entries with long names): 4 MB, two 2 MiB messages at least.
      const blob = bytes(5, 33);
      const bigDirs = Array.from({ length: 40 }, (_, k) =>
        enc({ files: Array.from({ length: 1000 }, (_, i) => file(`dir${k}-file-${String(i).padStart(5, '0')}-with-a-rather-long-name.txt`, blob)) }),
      );
      const bigRoot = enc({ directories: bigDirs.map((x, k) => ({ name: `d${k}`, digest: digestOf(x) })) });

      beforeAll(async () => {
        await upload(blob, bigRoot);
        for (let k = 0; k < bigDirs.length; k += 8) await upload(...bigDirs.slice(k, k + 8));
      });

      it('without page_size: pages cut by size, each but the last with a token that resumes right after it', async () => {
        const messages = await getTree({ rootDigest: digestOf(bigRoot) });
        expect(messages.length).toBeGreaterThanOrEqual(2);
        expectPages(messages, bigDirs.length + 1);
        for (const m of messages) expect(re.GetTreeResponse.encode(m).finish().length).toBeLessThan(4 * 1024 * 1024);
        await expectTokensResume({ rootDigest: digestOf(bigRoot) }, messages);
      });

      it('with page_size: pages of page_size, tokens that resume', async () => {
        const messages = await getTree({ rootDigest: digestOf(bigRoot), pageSize: 7 });
        expect(messages).toHaveLength(Math.ceil((bigDirs.length + 1) / 7));
        expectPages(messages, bigDirs.length + 1, 7);
        await expectTokensResume({ rootDigest: digestOf(bigRoot), pageSize: 7 }, messages);
      });
    });

    it('leaves out a missing subtree and returns the rest', async () => {
      const lost = enc({ files: [file('lost', f1)] });
      const partialRoot = enc({ directories: [{ name: 'a', digest: digestOf(aDir) }, { name: 'lost', digest: digestOf(lost) }] });
      await upload(partialRoot);
      const dirs = (await getTree({ rootDigest: digestOf(partialRoot) })).flatMap((r) => r.directories);
      expect(dirs.map(hashOf).sort()).toEqual([partialRoot, aDir, cDir, dDir].map((x) => digestOf(x).hash).sort());
    });
  });
});
