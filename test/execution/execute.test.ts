import { rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call } from '../../src/client/reapi-client.js';
import { treeFromDirectory, type LocalTree } from '../../src/client/merkle.js';
import { Digest } from '../../src/digest/digest.js';
import { BLAKE3 } from '../../src/digest/digest-function.js';
import { re } from '../../src/proto.js';
import { findBubblewrap } from '../../src/runner/bubblewrap-runner.js';
import { BUSYBOX, buildStreamReadOnlyRoot, makeBusyboxRoot } from '../helpers/busybox-root.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { execute, readBlob, uploadAction, uploadTree } from '../helpers/exec-client.js';
import { bsRead } from '../helpers/storage.js';

const missing = !BUSYBOX ? 'busybox-static (apt-get install busybox-static)' : !findBubblewrap() ? 'bubblewrap (apt-get install bubblewrap)' : undefined;

describe.skipIf(missing)(`Execute in the rootfs sandbox${missing ? ` (skipped: install ${missing})` : ''}`, () => {
  let d: TestDaemon;
  let hostRoot: string;
  let tree: LocalTree;

  beforeAll(async () => {
    d = await startTestDaemon();
    hostRoot = makeBusyboxRoot((root) => {
      mkdirSync(join(root, 'work', 'src'), { recursive: true });
      writeFileSync(join(root, 'work', 'src', 'input.txt'), 'hello from the input root\n');
    });
    // BuildStream's shape: a read-only root with writable work, tmp and dev subtrees.
    tree = await treeFromDirectory(hostRoot, {
      directoryProperties: buildStreamReadOnlyRoot,
    });
    await uploadTree(d.clients, tree);
  });
  afterAll(async () => {
    await d?.stop();
    if (hostRoot) rmSync(hostRoot, { recursive: true, force: true });
  });

  it('runs sh from the input root as uid 0 with the exact environment and returns outputs', async () => {
    const action = await uploadAction(d.clients, tree.root, {
      args: ['sh', '-c', 'id -u; id -g; env | sort; cat src/input.txt > out/copy.txt; echo err >&2; mkdir -p out/dir; echo x > out/dir/f; ln -s copy.txt out/link'],
      env: [['PATH', '/usr/bin:/bin'], ['ZED', 'last'], ['ALPHA', 'first']],
      workingDirectory: 'work',
      outputPaths: ['out/copy.txt', 'out/dir', 'out/link', 'out/absent'],
    });
    const { operations, response, error } = await execute(d.clients, action);
    expect(error).toBeUndefined();
    expect(operations[0]!.name).toMatch(/^operations\//);
    expect(new Set(operations.map((o) => o.name)).size).toBe(1);
    const last = operations[operations.length - 1]!;
    expect(last.done).toBe(true);
    expect(last.error).toBeFalsy();
    expect(response!.status?.code ?? 0).toBe(0);
    const result = response!.result!;
    expect(result.exitCode).toBe(0);
    const stdout = (await readBlob(d.clients, result.stdoutDigest)).toString();
    expect(stdout.split('\n').slice(0, 2)).toEqual(['0', '0']);
    expect(stdout).toContain('ALPHA=first');
    expect(stdout).toContain('ZED=last');
    expect(stdout).not.toMatch(/^HOME=/m);
    expect((await readBlob(d.clients, result.stderrDigest)).toString()).toBe('err\n');
    const copy = result.outputFiles!.find((f) => f.path === 'out/copy.txt')!;
    expect((await readBlob(d.clients, copy.digest)).toString()).toBe('hello from the input root\n');
    expect(result.outputSymlinks!.map((s) => [s.path, s.target])).toEqual([['out/link', 'copy.txt']]);
    const dir = result.outputDirectories!.find((o) => o.path === 'out/dir')!;
    const t = re.Tree.decode(await readBlob(d.clients, dir.treeDigest));
    expect(t.root!.files!.map((f) => f.name)).toEqual(['f']);
    const rootDir = re.Directory.decode(await readBlob(d.clients, dir.rootDirectoryDigest));
    expect(rootDir.files.map((f) => f.name)).toEqual(['f']);
  });

  it('keeps the read-only root read-only and gives procfs, /dev, /dev/shm and /tmp', async () => {
    const action = await uploadAction(d.clients, tree.root, {
      args: ['sh', '-c', 'touch /usr/bin/evil 2>/dev/null && echo WROTE-ROOT; test -r /proc/self/status && echo proc; test -c /dev/null && echo devnull; echo shm > /dev/shm/x && cat /dev/shm/x; echo t > /tmp/t && cat /tmp/t; ls /proc | grep -c "^[0-9]"; cat <(echo fd)'],
      workingDirectory: 'work',
    });
    const { response } = await execute(d.clients, action);
    const out = (await readBlob(d.clients, response!.result!.stdoutDigest)).toString();
    expect(out).not.toContain('WROTE-ROOT');
    expect(out).toContain('proc\ndevnull\nshm\nt\n');
  });

  it('has no network unless network=on', async () => {
    const action = await uploadAction(d.clients, tree.root, { args: ['sh', '-c', 'ip link 2>/dev/null | grep -c "^[0-9]" || cat /proc/net/dev | tail -n +3 | wc -l'], workingDirectory: 'work' });
    const { response } = await execute(d.clients, action);
    expect((await readBlob(d.clients, response!.result!.stdoutDigest)).toString().trim()).toBe('1');
  });

  it('returns outputs of a failing command but does not cache it', async () => {
    const action = await uploadAction(d.clients, tree.root, {
      args: ['sh', '-c', 'mkdir -p install && echo partial > install/file; exit 3'],
      workingDirectory: 'work',
      outputPaths: ['install'],
    });
    const { response } = await execute(d.clients, action);
    expect(response!.result!.exitCode).toBe(3);
    expect(response!.result!.outputDirectories).toHaveLength(1);
    await expect(call(d.clients.actionCache, 'GetActionResult', { actionDigest: action.toProto() })).rejects.toMatchObject({ code: 5 });
  });

  it('answers a repeated action from the action cache', async () => {
    const action = await uploadAction(d.clients, tree.root, { args: ['sh', '-c', 'echo cached-once'], workingDirectory: 'work' });
    const first = await execute(d.clients, action);
    expect(first.response!.cachedResult).toBe(false);
    const second = await execute(d.clients, action);
    expect(second.response!.cachedResult).toBe(true);
    expect(second.response!.result!.exitCode).toBe(0);
    const third = await execute(d.clients, action, { skipCacheLookup: true });
    expect(third.response!.cachedResult).toBe(false);
  });

  it('refuses unknown platform properties and ISAs at once with FAILED_PRECONDITION naming them', async () => {
    const a = await uploadAction(d.clients, tree.root, { args: ['true'], platform: [['OSFamily', 'linux'], ['container-image', 'docker://x']] });
    const r1 = await execute(d.clients, a);
    expect(r1.error?.code).toBe(9);
    expect(r1.error?.details).toContain('container-image');
    const b = await uploadAction(d.clients, tree.root, { args: ['true'], platform: [['ISA', 'sparc-v9'], ['OSFamily', 'linux']] });
    const r2 = await execute(d.clients, b);
    expect(r2.error?.code).toBe(9);
    expect(r2.error?.details).toContain('sparc-v9');
  });

  it('lists every missing input blob in one FAILED_PRECONDITION', async () => {
    const dirBytes = re.Directory.encode({
      files: [
        { name: 'a', digest: { hash: 'a'.repeat(64), sizeBytes: 3 } },
        { name: 'b', digest: { hash: 'b'.repeat(64), sizeBytes: 4 } },
      ],
    }).finish();
    const { uploadBlob } = await import('../helpers/exec-client.js');
    const root = await uploadBlob(d.clients, dirBytes);
    const action = await uploadAction(d.clients, root, { args: ['true'] });
    const r = await execute(d.clients, action);
    expect(r.error?.code).toBe(9);
    expect(r.error?.details).toContain('aaaa');
    expect(r.error?.details).toContain('2 blob(s)');
  });

  it('rejects output paths that escape the root', async () => {
    const action = await uploadAction(d.clients, tree.root, { args: ['true'], workingDirectory: 'work', outputPaths: ['../../etc'] });
    const r = await execute(d.clients, action);
    expect(r.error?.code).toBe(3);
    expect(r.error?.details).toContain('../../etc');
  });

  it('normalises "." and ".." output paths inside the root and echoes them verbatim', async () => {
    const action = await uploadAction(d.clients, tree.root, {
      args: ['sh', '-c', 'mkdir -p /work/inst && echo i > /work/inst/f'],
      workingDirectory: 'work/src',
      outputPaths: ['.', '../inst'],
    });
    const { response } = await execute(d.clients, action);
    expect(response!.result!.outputDirectories!.map((o) => o.path).sort()).toEqual(['.', '../inst']);
  });

  it('kills an action at its timeout', async () => {
    const action = await uploadAction(d.clients, tree.root, { args: ['sh', '-c', 'sleep 30'], timeoutSeconds: 1, workingDirectory: 'work' });
    const { response } = await execute(d.clients, action);
    // DEADLINE_EXCEEDED, not sleep's success 30 s later.
    expect(response!.status!.code).toBe(4);
  });

  it('runs an action addressed with BLAKE3 and hashes its outputs with BLAKE3', async () => {
    const b3tree = await treeFromDirectory(hostRoot, {
      fn: BLAKE3,
      directoryProperties: buildStreamReadOnlyRoot,
    });
    await uploadTree(d.clients, b3tree);
    expect(b3tree.root.fn).toBe(BLAKE3);
    // out/big is past the output collector's whole-file limit (4 MiB), so it is hashed streaming.
    const action = await uploadAction(d.clients, b3tree.root, {
      args: ['sh', '-c', 'cat src/input.txt > out/copy.txt; mkdir -p out/dir; echo x > out/dir/f; dd if=/dev/zero of=out/big bs=1048576 count=5 2>/dev/null; echo b3-out; echo b3-err >&2'],
      workingDirectory: 'work',
      outputPaths: ['out/copy.txt', 'out/dir', 'out/big'],
    });
    expect(action.fn).toBe(BLAKE3);
    const { response, error, operations } = await execute(d.clients, action);
    expect(error).toBeUndefined();
    expect(response!.status?.code ?? 0).toBe(0);
    const meta = re.ExecuteOperationMetadata.decode(operations[0]!.metadata!.value!);
    expect(meta.digestFunction).toBe(BLAKE3!.value);
    const result = response!.result!;
    expect(result.exitCode).toBe(0);
    const read = (dg: re.IDigest | null | undefined): Promise<Buffer> => readBlob(d.clients, dg, BLAKE3);
    const expectB3 = async (dg: re.IDigest | null | undefined, content: Buffer): Promise<void> => {
      expect((await read(dg)).toString()).toBe(content.toString());
      expect({ hash: dg!.hash, sizeBytes: Number(dg!.sizeBytes) }).toEqual(Digest.compute(content, BLAKE3).toProto());
    };
    await expectB3(result.stdoutDigest, Buffer.from('b3-out\n'));
    await expectB3(result.stderrDigest, Buffer.from('b3-err\n'));
    const file = (path: string): re.IOutputFile => result.outputFiles!.find((f) => f.path === path)!;
    await expectB3(file('out/copy.txt').digest, Buffer.from('hello from the input root\n'));
    const big = file('out/big').digest!;
    expect({ hash: big.hash, sizeBytes: Number(big.sizeBytes) }).toEqual(Digest.compute(Buffer.alloc(5 * 1024 * 1024), BLAKE3).toProto());
    const bigData = await bsRead(d.clients.byteStream as any, `blobs/blake3/${big.hash}/${big.sizeBytes}`);
    expect(bigData.equals(Buffer.alloc(5 * 1024 * 1024))).toBe(true);
    const dir = result.outputDirectories!.find((o) => o.path === 'out/dir')!;
    const treeBytes = await read(dir.treeDigest);
    expect(dir.treeDigest).toEqual(Digest.compute(treeBytes, BLAKE3).toProto());
    const t = re.Tree.decode(treeBytes);
    expect(t.root!.files![0]!.digest).toEqual(Digest.compute(Buffer.from('x\n'), BLAKE3).toProto());
    expect(dir.rootDirectoryDigest).toEqual(Digest.compute(re.Directory.encode(t.root!).finish(), BLAKE3).toProto());
    // Cached under BLAKE3; the same hash text without a digest function is a SHA-256 action.
    const cached: any = await call(d.clients.actionCache, 'GetActionResult', { actionDigest: action.toProto(), digestFunction: BLAKE3!.value });
    expect(cached.stdoutDigest).toEqual(result.stdoutDigest);
    await expect(call(d.clients.actionCache, 'GetActionResult', { actionDigest: action.toProto() })).rejects.toMatchObject({ code: 5 });
    const again = await execute(d.clients, action);
    expect(again.response!.cachedResult).toBe(true);
  });
});

describe.skipIf(missing)('Execute: identities, host tools, mtimes', () => {
  let d: TestDaemon;
  let hostRoot: string;
  let tree: LocalTree;
  beforeAll(async () => {
    d = await startTestDaemon();
    hostRoot = makeBusyboxRoot((root) => writeFileSync(join(root, 'work', 'hello.c'), 'int main(void) { return 0; }\n'));
    tree = await treeFromDirectory(hostRoot);
    await uploadTree(d.clients, tree);
  });
  afterAll(async () => {
    await d?.stop();
    if (hostRoot) rmSync(hostRoot, { recursive: true, force: true });
  });

  it('runs as unixUID/unixGID when asked', async () => {
    const action = await uploadAction(d.clients, tree.root, { args: ['sh', '-c', 'id -u; id -g'], platform: [['OSFamily', 'linux'], ['unixGID', '1234'], ['unixUID', '1000']] });
    const { response } = await execute(d.clients, action);
    expect((await readBlob(d.clients, response!.result!.stdoutDigest)).toString()).toBe('1000\n1234\n');
  });

  it('reads the platform from the Command for pre-2.2 clients', async () => {
    const action = await uploadAction(d.clients, tree.root, { args: ['true'], platform: [['OSFamily', 'linux'], ['bogus', '1']], platformInCommand: true });
    const r = await execute(d.clients, action);
    expect(r.error?.code).toBe(9);
    expect(r.error?.details).toContain('bogus');
  });

  it('runs host tools with the input root as working tree in the host-tools sandbox', async () => {
    const action = await uploadAction(d.clients, tree.root, {
      args: ['/bin/sh', '-c', 'test -x /usr/bin/env && cat work/hello.c > out.txt && pwd'],
      platform: [['OSFamily', 'linux'], ['reexec-sandbox', 'host-tools']],
      outputPaths: ['out.txt'],
    });
    const { response } = await execute(d.clients, action);
    expect(response!.result!.exitCode).toBe(0);
    expect((await readBlob(d.clients, response!.result!.outputFiles![0]!.digest)).toString()).toContain('int main');
    // The daemon's data dir is hidden from actions.
    const peek = await uploadAction(d.clients, tree.root, {
      args: ['/bin/sh', '-c', `ls ${d.dataDir} | wc -l`],
      platform: [['OSFamily', 'linux'], ['reexec-sandbox', 'host-tools']],
    });
    const r2 = await execute(d.clients, peek);
    expect((await readBlob(d.clients, r2.response!.result!.stdoutDigest)).toString().trim()).toBe('0');
  });

  it('reports output mtimes when output_node_properties asks', async () => {
    const action = await uploadAction(d.clients, tree.root, {
      args: ['sh', '-c', 'echo x > stamped && touch -d @1600000000 stamped'],
      workingDirectory: 'work',
      outputPaths: ['stamped'],
      outputNodeProperties: ['mtime'],
    });
    const { response } = await execute(d.clients, action);
    expect(Number(response!.result!.outputFiles![0]!.nodeProperties!.mtime!.seconds)).toBe(1600000000);
  });
});

describe.skipIf(missing)('Execute: input node properties', () => {
  let d: TestDaemon;
  let hostRoot: string;
  beforeAll(async () => {
    d = await startTestDaemon();
    hostRoot = makeBusyboxRoot();
  });
  afterAll(async () => {
    await d?.stop();
    if (hostRoot) rmSync(hostRoot, { recursive: true, force: true });
  });

  it('stages input files with the mtime and mode their node properties give', async () => {
    const { uploadBlob } = await import('../helpers/exec-client.js');
    const base = await treeFromDirectory(hostRoot);
    await uploadTree(d.clients, base);
    const content = await uploadBlob(d.clients, Buffer.from('stamped input\n'));
    const rootDir = re.Directory.decode(base.blobs.get(base.root.key)!.data);
    const work = re.Directory.encode({
      files: [{ name: 'in.txt', digest: content.toProto(), nodeProperties: { mtime: { seconds: 1500000000 }, unixMode: { value: 0o600 } } }],
    }).finish();
    const workDigest = await uploadBlob(d.clients, work);
    rootDir.directories = rootDir.directories.map((e) => (e.name === 'work' ? { name: 'work', digest: workDigest.toProto() } : e));
    const root = await uploadBlob(d.clients, re.Directory.encode(rootDir).finish());
    const action = await uploadAction(d.clients, root, { args: ['sh', '-c', 'stat -c "%Y %a" in.txt'], workingDirectory: 'work' });
    const { response } = await execute(d.clients, action);
    expect((await readBlob(d.clients, response!.result!.stdoutDigest)).toString()).toBe('1500000000 600\n');
  });
});
