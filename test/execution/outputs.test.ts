import { rmSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { treeFromDirectory, type LocalTree } from '../../src/client/merkle.js';
import { call } from '../../src/client/reapi-client.js';
import { Digest } from '../../src/digest/digest.js';
import { BLAKE3 } from '../../src/digest/digest-function.js';
import { re, rpc } from '../../src/proto.js';
import { findBubblewrap } from '../../src/runner/bubblewrap-runner.js';
import { BUSYBOX, makeBusyboxRoot } from '../helpers/busybox-root.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { execute, readBlob, uploadAction, uploadBlob, uploadTree } from '../helpers/exec-client.js';

/**
 * What the Command says about outputs, as REAPI 2.3 words it: `output_paths` supersedes the
 * legacy lists, outputs of the wrong type are FAILED_PRECONDITION, output_node_properties are
 * reported on files and directories (or refused when unknown); and PreconditionFailure
 * subjects name the digest function when it is not a legacy one.
 */
const missing = !BUSYBOX ? 'busybox-static' : !findBubblewrap() ? 'bubblewrap' : undefined;

/** The google.rpc.PreconditionFailure violations of a failed call. */
function violations(error: grpc.ServiceError | undefined): Array<{ type: string; subject: string }> {
  const bin = error?.metadata?.get('grpc-status-details-bin')[0];
  if (!bin) return [];
  const status = rpc.Status.decode(bin as Buffer);
  return status.details
    .filter((a) => a.type_url?.endsWith('google.rpc.PreconditionFailure'))
    .flatMap((a) => rpc.PreconditionFailure.decode(a.value!).violations.map((v) => ({ type: v.type ?? '', subject: v.subject ?? '' })));
}

describe.skipIf(missing)(`Execute: outputs as the Command declares them${missing ? ` (skipped: apt-get install ${missing})` : ''}`, () => {
  let d: TestDaemon;
  let hostRoot: string;
  let tree: LocalTree;
  beforeAll(async () => {
    d = await startTestDaemon();
    hostRoot = makeBusyboxRoot();
    tree = await treeFromDirectory(hostRoot);
    await uploadTree(d.clients, tree);
  });
  afterAll(async () => {
    await d?.stop();
    if (hostRoot) rmSync(hostRoot, { recursive: true, force: true });
  });

  it('ignores output_files and output_directories when output_paths is set (Bazel 6.3+ sends all three)', async () => {
    const action = await uploadAction(d.clients, tree.root, {
      args: ['sh', '-c', 'mkdir -p bin/dir && echo h > bin/greeting.h && echo f > bin/dir/f'],
      workingDirectory: 'work',
      outputPaths: ['bin/dir', 'bin/greeting.h'],
      outputFiles: ['bin/greeting.h'],
      outputDirectories: ['bin/dir'],
    });
    const { response, error } = await execute(d.clients, action);
    expect(error).toBeUndefined();
    expect(response!.status?.code ?? 0).toBe(0);
    expect(response!.result!.outputFiles!.map((f) => f.path)).toEqual(['bin/greeting.h']);
    expect(response!.result!.outputDirectories!.map((f) => f.path)).toEqual(['bin/dir']);
  });

  it('refuses a path listed twice in one list, or as both a file and a directory', async () => {
    const cases: Array<[Parameters<typeof uploadAction>[2], RegExp]> = [
      [{ args: ['true'], outputPaths: ['a', 'a'] }, /output_paths\[1\] "a" is listed twice/],
      [{ args: ['true'], outputFiles: ['a', 'a'] }, /output_files\[1\] "a" is listed twice/],
      [{ args: ['true'], outputDirectories: ['d', 'd'] }, /output_directories\[1\] "d" is listed twice/],
      [{ args: ['true'], outputFiles: ['a'], outputDirectories: ['a'] }, /output_directories\[0\] "a" is also listed in output_files/],
    ];
    for (const [spec, message] of cases) {
      const { error } = await execute(d.clients, await uploadAction(d.clients, tree.root, spec));
      expect(error?.code).toBe(3);
      expect(error?.details).toMatch(message);
    }
  });

  it('answers outputs of the wrong type with FAILED_PRECONDITION, with the logs, and caches nothing', async () => {
    const script = 'mkdir -p d realdir && echo f > f && ln -s realdir dirlink && ln -s f filelink && echo ran';
    const cases: Array<[Parameters<typeof uploadAction>[2], string]> = [
      [{ args: ['sh', '-c', script], outputFiles: ['d'] }, 'output "d" is listed in output_files but is a directory'],
      [{ args: ['sh', '-c', script], outputDirectories: ['f'] }, 'output "f" is listed in output_directories but is a regular file'],
      [{ args: ['sh', '-c', script], outputFiles: ['dirlink'] }, 'output "dirlink" is listed in output_files but is a symlink to a directory'],
      [{ args: ['sh', '-c', script], outputDirectories: ['filelink'] }, 'output "filelink" is listed in output_directories but is a symlink to a file'],
    ];
    for (const [spec, message] of cases) {
      const action = await uploadAction(d.clients, tree.root, { ...spec, workingDirectory: 'work' });
      const { response, error } = await execute(d.clients, action);
      expect(error).toBeUndefined();
      expect(response!.status?.code, message).toBe(9); // FAILED_PRECONDITION
      expect(response!.status?.message).toContain(message);
      expect((await readBlob(d.clients, response!.result!.stdoutDigest)).toString()).toBe('ran\n');
      await expect(call(d.clients.actionCache, 'GetActionResult', { actionDigest: action.toProto() })).rejects.toMatchObject({ code: 5 });
    }
  });

  it('returns legacy symlink outputs of the right type in output_file_symlinks and output_directory_symlinks', async () => {
    const action = await uploadAction(d.clients, tree.root, {
      args: ['sh', '-c', 'mkdir -p realdir && echo f > f && ln -s realdir dirlink && ln -s f filelink && ln -s nowhere dangling'],
      workingDirectory: 'work',
      outputFiles: ['dangling', 'filelink'],
      outputDirectories: ['dirlink'],
    });
    const { response } = await execute(d.clients, action);
    expect(response!.status?.code ?? 0).toBe(0);
    expect(response!.result!.outputFileSymlinks!.map((s) => [s.path, s.target])).toEqual([
      ['dangling', 'nowhere'],
      ['filelink', 'f'],
    ]);
    expect(response!.result!.outputDirectorySymlinks!.map((s) => [s.path, s.target])).toEqual([['dirlink', 'realdir']]);
  });

  it('refuses output_node_properties it does not know, naming them', async () => {
    const action = await uploadAction(d.clients, tree.root, { args: ['true'], outputPaths: ['x'], outputNodeProperties: ['mtime', 'owner'] });
    const { error } = await execute(d.clients, action);
    expect(error?.code).toBe(3);
    expect(error?.details).toContain('output_node_properties[1] "owner"');
  });

  it('reports mtime and unix_mode on output directories, in the Tree and in each Directory blob, and on files', async () => {
    const action = await uploadAction(d.clients, tree.root, {
      args: [
        'sh',
        '-c',
        'mkdir -p out/sub && echo x > out/sub/f && chmod 640 out/sub/f && chmod 750 out/sub && chmod 705 out && touch -d @1600000000 out/sub/f && touch -d @1600000100 out/sub && touch -d @1600000200 out',
      ],
      workingDirectory: 'work',
      outputPaths: ['out'],
      outputNodeProperties: ['mtime', 'unix_mode'],
    });
    const { response } = await execute(d.clients, action);
    expect(response!.status?.code ?? 0).toBe(0);
    const out = response!.result!.outputDirectories![0]!;
    const t = re.Tree.decode(await readBlob(d.clients, out.treeDigest));
    const props = (p: re.INodeProperties | null | undefined): [number, number] => [Number(p?.mtime?.seconds), Number(p?.unixMode?.value)];
    expect(props(t.root!.nodeProperties)).toEqual([1600000200, 0o705]);
    const sub = t.children[0]!;
    expect(props(sub.nodeProperties)).toEqual([1600000100, 0o750]);
    expect(props(sub.files![0]!.nodeProperties)).toEqual([1600000000, 0o640]);
    // The Directory blobs say the same: the root's, and the one its entry points to.
    const rootDir = re.Directory.decode(await readBlob(d.clients, out.rootDirectoryDigest));
    expect(props(rootDir.nodeProperties)).toEqual([1600000200, 0o705]);
    const subDir = re.Directory.decode(await readBlob(d.clients, rootDir.directories[0]!.digest));
    expect(props(subDir.nodeProperties)).toEqual([1600000100, 0o750]);
    expect(rootDir.directories[0]!.digest).toEqual(Digest.compute(re.Directory.encode(sub).finish()).toProto());
  });

  it('names the digest function in PreconditionFailure subjects unless it is a legacy one', async () => {
    const missingCommand = (fn: typeof BLAKE3) => re.Action.encode({ commandDigest: Digest.compute(Buffer.from(`absent ${Math.random()}`), fn).toProto(), inputRootDigest: Digest.empty(fn).toProto() }).finish();
    const sha = await uploadBlob(d.clients, missingCommand(undefined));
    const r1 = await execute(d.clients, sha);
    expect(r1.error?.code).toBe(9);
    const v1 = violations(r1.error);
    expect(v1).toHaveLength(1);
    expect(v1[0]!.subject).toMatch(/^blobs\/[0-9a-f]{64}\/\d+$/);
    if (!BLAKE3) return;
    const b3 = await uploadBlob(d.clients, missingCommand(BLAKE3), BLAKE3);
    const r2 = await execute(d.clients, b3);
    expect(r2.error?.code).toBe(9);
    const v2 = violations(r2.error);
    expect(v2.map((v) => v.type)).toEqual(['MISSING']);
    expect(v2[0]!.subject).toMatch(/^blobs\/blake3\/[0-9a-f]{64}\/\d+$/);
  });
});
