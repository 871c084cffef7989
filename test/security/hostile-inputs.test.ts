import { randomUUID } from 'node:crypto';
import { rmSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call } from '../../src/client/reapi-client.js';
import { treeFromDirectory, type LocalTree } from '../../src/client/merkle.js';
import { Digest } from '../../src/digest/digest.js';
import { re } from '../../src/proto.js';
import { findBubblewrap } from '../../src/runner/bubblewrap-runner.js';
import { BUSYBOX, makeBusyboxRoot } from '../helpers/busybox-root.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { execute, uploadAction, uploadTree, writeBlob } from '../helpers/exec-client.js';
import { bsRead, digestOf, expectGrpcError } from '../helpers/storage.js';
import { caseTally } from './tally.js';

const noSandbox = !BUSYBOX ? 'busybox-static' : !findBubblewrap() ? 'bubblewrap' : undefined;

/** Limits of the daemon under test, low so that trees past them stay cheap to build. */
const MAX_DEPTH = 64;
const MAX_ENTRIES = 50_000;

/**
 * Well-formed gRPC carrying hostile content: Directory names that climb out or contain "/",
 * sizes that lie, trees too deep, too wide, or exponentially repeated, garbage where the
 * server decodes Directory, Action and Command messages itself. Each must get its status
 * code; none may crash the daemon or hang it.
 */
describe('hostile inputs', () => {
  const tally = caseTally('hostile inputs');
  let d: TestDaemon;
  let hostRoot: string | undefined;
  let base: LocalTree | undefined;

  beforeAll(async () => {
    d = await startTestDaemon((c) => {
      c.limits = { ...c.limits, maxTreeDepth: MAX_DEPTH, maxTreeEntries: MAX_ENTRIES };
    });
    if (!noSandbox) {
      hostRoot = makeBusyboxRoot();
      base = await treeFromDirectory(hostRoot);
      await uploadTree(d.clients, base);
    }
  });
  afterAll(async () => {
    await d?.stop();
    if (hostRoot) rmSync(hostRoot, { recursive: true, force: true });
  });

  /** Upload blobs in batches of up to 2 MiB (larger ones by ByteStream). */
  const putAll = async (blobs: Uint8Array[]): Promise<void> => {
    let batch: Uint8Array[] = [];
    let bytes = 0;
    const flush = async (): Promise<void> => {
      if (batch.length === 0) return;
      const res: any = await call(d.clients.cas, 'BatchUpdateBlobs', { requests: batch.map((data) => ({ digest: digestOf(data), data })) });
      for (const r of res.responses) expect(r.status?.code ?? 0, r.status?.message).toBe(0);
      batch = [];
      bytes = 0;
    };
    for (const b of blobs) {
      if (b.byteLength > 1024 * 1024) {
        await writeBlob(d.clients, Digest.compute(b), b);
        continue;
      }
      if (bytes + b.byteLength > 2 * 1024 * 1024) await flush();
      batch.push(b);
      bytes += b.byteLength;
    }
    await flush();
  };
  const put = async (data: Uint8Array): Promise<Digest> => {
    await putAll([data]);
    return Digest.compute(data);
  };
  /** The busybox root with `extra` as its "x" subdirectory (or any other root Directory). */
  const rootWith = async (extra: re.IDirectory | Uint8Array): Promise<Digest> => {
    const x = await put(extra instanceof Uint8Array ? extra : re.Directory.encode(extra).finish());
    const root = re.Directory.decode(base!.blobs.get(base!.root.key)!.data);
    root.directories = [...root.directories.filter((e) => e.name !== 'x'), { name: 'x', digest: x.toProto() }].sort((a, b) => (a.name! < b.name! ? -1 : 1));
    return put(re.Directory.encode(root).finish());
  };
  const executeIn = async (root: Digest, args = ['true'], extra: Record<string, unknown> = {}) => execute(d.clients, await uploadAction(d.clients, root, { args, doNotCache: true, ...extra }));

  const stillServing = async (): Promise<void> => {
    const caps: any = await call(d.clients.capabilities, 'GetCapabilities', {});
    expect(caps.cacheCapabilities.digestFunctions).toContain(1);
  };

  it.skipIf(noSandbox)('refuses Directory names that climb out, contain "/" or NUL, repeat, or are unsorted', async () => {
    const blob = (await put(Buffer.from('payload'))).toProto();
    const bad: Array<[string, re.IDirectory]> = [
      ['..', { files: [{ name: '..', digest: blob }] }],
      ['.', { directories: [{ name: '.', digest: digestOf(re.Directory.encode({}).finish()) }] }],
      ['empty', { files: [{ name: '', digest: blob }] }],
      ['slash', { files: [{ name: 'a/b', digest: blob }] }],
      ['absolute', { symlinks: [{ name: '/etc', target: 'x' }] }],
      ['dotdot-path', { files: [{ name: '../../../../../../tmp/reexec-escaped', digest: blob }] }],
      ['nul', { files: [{ name: 'a\0b', digest: blob }] }],
      ['duplicate', { files: [{ name: 'a', digest: blob }], symlinks: [{ name: 'a', target: 'b' }] }],
      ['unsorted', { files: [{ name: 'b', digest: blob }, { name: 'a', digest: blob }] }],
      ['empty-symlink', { symlinks: [{ name: 's', target: '' }] }],
    ];
    await put(re.Directory.encode({}).finish());
    tally.add(bad.length);
    for (const [what, dir] of bad) {
      const { error } = await executeIn(await rootWith(dir));
      expect(error?.code, `${what}: ${error?.details}`).toBe(grpc.status.INVALID_ARGUMENT);
    }
    // Also as the root itself, and one level further down.
    const deeper = await put(re.Directory.encode({ directories: [{ name: 'y', digest: (await put(re.Directory.encode(bad[3]![1]).finish())).toProto() }] }).finish());
    const asRoot = await put(re.Directory.encode(bad[0]![1]).finish());
    tally.add(2);
    for (const root of [asRoot, deeper]) expect((await executeIn(root)).error?.code).toBe(grpc.status.INVALID_ARGUMENT);
    await stillServing();
  });

  it.skipIf(noSandbox)('refuses working directories and output paths outside the root', async () => {
    const root = await rootWith({});
    const bad = [
      { workingDirectory: '../..' },
      { workingDirectory: '/etc' },
      { workingDirectory: 'x/../../..' },
      { workingDirectory: 'x', outputPaths: ['../../etc/passwd'] },
      { outputPaths: ['/etc/passwd'] },
      { outputFiles: ['x/../../../../root/.ssh/id_rsa'] },
      { outputDirectories: ['..'] },
      { workingDirectory: 'no/such/dir' },
    ];
    tally.add(bad.length);
    for (const spec of bad) {
      const { error } = await executeIn(root, ['true'], spec);
      expect(error?.code, JSON.stringify(spec)).toBe(grpc.status.INVALID_ARGUMENT);
    }
  });

  it('refuses sizes that lie: batch entries, ByteStream writes, reads beyond the end', async () => {
    const data = Buffer.from('ten bytes!');
    const real = digestOf(data);
    const lies = [
      { digest: { hash: real.hash, sizeBytes: 1000 }, data },
      { digest: { hash: real.hash, sizeBytes: 0 }, data },
      { digest: { hash: real.hash, sizeBytes: -5 }, data },
      { digest: { hash: real.hash, sizeBytes: 9 }, data },
    ];
    tally.add(lies.length);
    const res: any = await call(d.clients.cas, 'BatchUpdateBlobs', { requests: lies });
    for (const r of res.responses) expect(r.status.code, r.status.message).toBe(grpc.status.INVALID_ARGUMENT);
    // Declared small, sent large: refused as soon as it is too much, nothing stored.
    const writeAll = (declared: number, chunks: Buffer[], finish = true): Promise<unknown> =>
      new Promise((resolve, reject) => {
        const s = (d.clients.byteStream as any).Write((e: grpc.ServiceError | null, r: unknown) => (e ? reject(e) : resolve(r)));
        s.on('error', () => undefined);
        let off = 0;
        chunks.forEach((c, i) => {
          s.write({ resourceName: i === 0 ? `uploads/${randomUUID()}/blobs/${real.hash}/${declared}` : '', writeOffset: off, data: c, finishWrite: finish && i === chunks.length - 1 });
          off += c.length;
        });
        s.end();
      });
    const cases: Array<[string, () => Promise<unknown>, number[]]> = [
      ['10 declared, 1 MiB sent', () => writeAll(10, [Buffer.alloc(1024 * 1024, 1)]), [grpc.status.INVALID_ARGUMENT]],
      // The size is checked against the store's budget first, else against the data.
      ['1 PiB declared, 10 bytes then finish_write', () => writeAll(2 ** 50, [data]), [grpc.status.INVALID_ARGUMENT, grpc.status.RESOURCE_EXHAUSTED]],
      ['11 declared, 10 sent and finish_write', () => writeAll(11, [data]), [grpc.status.INVALID_ARGUMENT]],
      ['right size, wrong content', () => writeAll(10, [Buffer.from('TEN BYTES!')]), [grpc.status.INVALID_ARGUMENT]],
    ];
    tally.add(cases.length);
    for (const [what, p, codes] of cases) {
      const err = await p().then(
        () => undefined,
        (e: grpc.ServiceError) => e,
      );
      expect(codes, `${what}: ${err?.code} ${err?.details}`).toContain(err?.code);
    }
    const missing: any = await call(d.clients.cas, 'FindMissingBlobs', { blobDigests: [real] });
    expect(missing.missingBlobDigests).toHaveLength(1);
    tally.add(2);
    await expectGrpcError(bsRead(d.clients.byteStream, `blobs/${real.hash}/${2 ** 52}`), grpc.status.NOT_FOUND);
    await expectGrpcError(bsRead(d.clients.byteStream, `blobs/${real.hash}/-1`), grpc.status.INVALID_ARGUMENT);
    await stillServing();
  });

  /** A chain of `depth` directories d/d/d/... under a root; returns the root digest. */
  const chain = async (depth: number): Promise<Digest> => {
    const blobs: Uint8Array[] = [];
    let child = re.Directory.encode({}).finish();
    blobs.push(child);
    for (let i = 0; i < depth; i++) {
      child = re.Directory.encode({ directories: [{ name: 'd', digest: digestOf(child) }] }).finish();
      blobs.push(child);
    }
    await putAll(blobs);
    return Digest.compute(child);
  };

  const getTree = (root: Digest): Promise<{ dirs: number; error?: grpc.ServiceError }> =>
    new Promise((resolve) => {
      let dirs = 0;
      const s = (d.clients.cas as any).GetTree({ rootDigest: root.toProto() });
      s.on('data', (r: re.GetTreeResponse) => (dirs += r.directories.length));
      s.on('error', (error: grpc.ServiceError) => resolve({ dirs, error }));
      s.on('end', () => resolve({ dirs }));
    });

  it('GetTree: walks a tree at the depth limit, refuses one past it and trees with too many directories', async () => {
    tally.add(3);
    expect(await getTree(await chain(MAX_DEPTH))).toEqual({ dirs: MAX_DEPTH + 1 });
    const deep = await getTree(await chain(5000));
    expect(deep.error?.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(deep.error?.details).toContain('max-tree-depth');
    // Many distinct directories side by side.
    const leaves = Array.from({ length: MAX_ENTRIES + 10 }, (_, i) => re.Directory.encode({ symlinks: [{ name: 'n', target: String(i) }] }).finish());
    await putAll(leaves);
    const wide = re.Directory.encode({ directories: leaves.map((l, i) => ({ name: `e${String(i).padStart(6, '0')}`, digest: digestOf(l) })) }).finish();
    const wideRoot = await put(wide);
    const w = await getTree(wideRoot);
    expect(w.error?.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(w.error?.details).toContain('max-tree-entries');
    await stillServing();
  });

  it.skipIf(noSandbox)('Execute: stages a tree at the depth limit, refuses deeper, wider and exponentially repeated ones promptly', async () => {
    const atLimit = await executeIn(await rootWith({ directories: [{ name: 'deep', digest: (await chain(MAX_DEPTH - 2)).toProto() }] }), ['sh', '-c', 'cd /x/deep && find . -type d | wc -l']);
    expect(atLimit.error, atLimit.error?.details).toBeUndefined();
    expect(atLimit.response!.result!.exitCode).toBe(0);

    const tooDeep = await executeIn(await rootWith({ directories: [{ name: 'deep', digest: (await chain(5000)).toProto() }] }));
    expect(tooDeep.error?.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(tooDeep.error?.details).toContain('max-tree-depth');

    // One directory with more files than allowed (the same blob under many names).
    const blob = (await put(Buffer.from('same content everywhere'))).toProto();
    const wide = re.Directory.encode({ files: Array.from({ length: MAX_ENTRIES + 1 }, (_, i) => ({ name: `f${String(i).padStart(6, '0')}`, digest: blob })) }).finish();
    const tooWide = await executeIn(await rootWith({ directories: [{ name: 'wide', digest: (await put(wide)).toProto() }] }));
    expect(tooWide.error?.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(tooWide.error?.details).toContain('max-tree-entries');

    // 40 Directory messages standing for 2^40 directories: refused before staging starts.
    let level = re.Directory.encode({ files: [{ name: 'f', digest: blob }] }).finish();
    const levels: Uint8Array[] = [level];
    for (let i = 0; i < 40; i++) {
      const dg = digestOf(level);
      level = re.Directory.encode({ directories: [{ name: 'a', digest: dg }, { name: 'b', digest: dg }] }).finish();
      levels.push(level);
    }
    await putAll(levels);
    const bomb = await executeIn(await rootWith({ directories: [{ name: 'bomb', digest: digestOf(level) }] }));
    expect(bomb.error?.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(bomb.error?.details).toMatch(/max-tree-(entries|depth)/);
    tally.add(4);
    await stillServing();
  });

  it.skipIf(noSandbox)('survives garbage and mutated Directory, Action and Command messages it decodes itself', async () => {
    // Garbage where a message is expected: refused with INVALID_ARGUMENT or FAILED_PRECONDITION,
    // or (protobufjs is lenient: it clamps truncated fields) decoded into some message that
    // runs; never INTERNAL or a hang.
    const garbage = [Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f]), Buffer.from([0x0a, 0x05, 0x61]), Buffer.from('not a protobuf at all')];
    const okCodes = [undefined, grpc.status.INVALID_ARGUMENT, grpc.status.FAILED_PRECONDITION];
    for (const g of garbage) {
      const gd = await put(g);
      expect(okCodes, 'garbage input root').toContain((await executeIn(gd)).error?.code);
      const action = await put(g);
      const e = await execute(d.clients, action);
      expect(okCodes, 'garbage Action').toContain(e.error?.code);
      const cmdAction = await put(re.Action.encode({ commandDigest: (await put(Buffer.concat([g, Buffer.from([0x12])]))).toProto(), inputRootDigest: base!.root.toProto() }).finish());
      expect(okCodes, 'garbage Command').toContain((await execute(d.clients, cmdAction)).error?.code);
      tally.add(3);
    }
    // Valid Directory messages mutated at random, used as an input subtree.
    const blob = (await put(Buffer.from('mutated tree payload'))).toProto();
    const seed = Buffer.from(
      re.Directory.encode({
        files: [{ name: 'a', digest: blob, isExecutable: true }],
        directories: [{ name: 'sub', digest: digestOf(re.Directory.encode({}).finish()) }],
        symlinks: [{ name: 'z', target: '../a' }],
        nodeProperties: { properties: [{ name: 'SubtreeReadOnly', value: 'true' }], mtime: { seconds: 1 }, unixMode: { value: 0o755 } },
      }).finish(),
    );
    let x = 12345;
    const rnd = (n: number): number => {
      x = (x * 1103515245 + 12345) >>> 0;
      return x % n;
    };
    const outcomes = new Map<number, number>();
    for (let i = 0; i < 60; i++) {
      const m = Buffer.from(seed);
      for (let k = 0; k <= rnd(3); k++) m[rnd(m.length)] = rnd(256);
      // The mutated bytes themselves are the Directory blob of /x.
      const r = await executeIn(await rootWith(m), ['sh', '-c', 'ls -la /x >/dev/null']);
      const code = r.error?.code ?? r.response?.status?.code ?? 0;
      outcomes.set(code, (outcomes.get(code) ?? 0) + 1);
      expect([0, grpc.status.INVALID_ARGUMENT, grpc.status.FAILED_PRECONDITION], `mutation ${i}: ${r.error?.details ?? r.response?.status?.message}`).toContain(code);
      tally.add();
    }
    await stillServing();
  });

  it.skipIf(noSandbox)('stages odd node properties (absurd mtimes, every mode bit) or refuses them, never failing inside', async () => {
    const blob = (await put(Buffer.from('odd properties'))).toProto();
    const odd: re.INodeProperties[] = [
      { mtime: { seconds: 1e15 } },
      { mtime: { seconds: -1e12 } },
      { mtime: { seconds: 1, nanos: 2e9 } },
      { mtime: { seconds: -1, nanos: -5 } },
      { unixMode: { value: 0o177777 } },
      { unixMode: { value: 0 } },
      { unixMode: { value: 0o6755 } },
      { properties: [{ name: 'x'.repeat(10_000), value: 'y'.repeat(100_000) }] },
    ];
    tally.add(odd.length);
    for (const nodeProperties of odd) {
      const r = await executeIn(await rootWith({ files: [{ name: 'f', digest: blob, nodeProperties }] }), ['sh', '-c', 'stat -c %a /x/f']);
      const code = r.error?.code ?? r.response?.status?.code ?? 0;
      expect([0, grpc.status.INVALID_ARGUMENT], `${JSON.stringify(nodeProperties).slice(0, 100)}: ${r.error?.details ?? r.response?.status?.message}`).toContain(code);
      if (code === 0 && nodeProperties.unixMode?.value === 0o6755) {
        // setuid and setgid never reach the staged file: it lives on the host.
        expect((await readBlobText(r.response!.result!.stdoutDigest)).trim()).toBe('755');
      }
    }
    await stillServing();
  });

  const readBlobText = async (dg: re.IDigest | null | undefined): Promise<string> => {
    const res: any = await call(d.clients.cas, 'BatchReadBlobs', { digests: [dg] });
    return Buffer.from(res.responses[0].data ?? []).toString();
  };

  it('zstd bombs and frames asking for huge windows are refused as such, and the daemon keeps serving', async () => {
    const data = Buffer.alloc(1024, 0);
    const h = digestOf(data);
    tally.add(4);
    // 4 GiB of zeros as RLE blocks (4 bytes each regenerate 128 KiB), claimed to be a 1 KiB blob.
    const rle = Buffer.alloc(4 * 32768);
    for (let i = 0; i < 32768; i++) rle.writeUIntLE(((128 * 1024) << 3) | (1 << 1) | (i === 32767 ? 1 : 0), i * 4, 3);
    const bomb = Buffer.concat([Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x00, 13 << 3]), rle]);
    const res: any = await call(d.clients.cas, 'BatchUpdateBlobs', { requests: [{ digest: h, data: bomb, compressor: 1 }] });
    expect(res.responses[0].status.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(res.responses[0].status.message).toContain('more than the 1024 bytes');
    const viaStream = await new Promise<grpc.ServiceError | null>((resolve) => {
      const s = d.clients.byteStream.Write((e: grpc.ServiceError | null) => resolve(e));
      s.on('error', () => undefined);
      s.write({ resourceName: `uploads/${randomUUID()}/compressed-blobs/zstd/${h.hash}/${h.sizeBytes}`, writeOffset: 0, data: bomb, finishWrite: true });
      s.end();
    });
    expect(viaStream?.code).toBe(grpc.status.INVALID_ARGUMENT);
    // A frame header asking for a 2 GiB window (zstd --long=31): refused before anything is allocated.
    const huge = Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x00, 21 << 3, 0x01, 0x00, 0x00]);
    const win: any = await call(d.clients.cas, 'BatchUpdateBlobs', { requests: [{ digest: h, data: huge, compressor: 1 }] });
    expect(win.responses[0].status.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(win.responses[0].status.message).toContain('window');
    await expectGrpcError(bsRead(d.clients.byteStream, `compressed-blobs/zstd/${h.hash}/${h.sizeBytes}`), grpc.status.NOT_FOUND);
    await stillServing();
  });
});
