import type * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { re } from '../../src/proto.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { bytes, call, digestOf, expectGrpcError } from '../helpers/storage.js';

const INVALID_ARGUMENT = 3;
const NOT_FOUND = 5;
const EMPTY = { hash: 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855', sizeBytes: 0 };

let seed = 1000;
/** A fresh action digest (the AC does not care what the Action is). */
const newAction = () => digestOf(Buffer.from(`action ${seed++}`));

describe('ActionCache', () => {
  let d: TestDaemon;
  const ac = (): grpc.Client & Record<string, any> => d.clients.actionCache;
  const upload = async (...blobs: Buffer[]): Promise<void> => {
    const res: any = await call(d.clients.cas, 'BatchUpdateBlobs', { requests: blobs.map((b) => ({ digest: digestOf(b), data: b })) });
    for (const r of res.responses) expect(r.status?.code ?? 0).toBe(0);
  };
  const update = (actionDigest: object, actionResult: object, instanceName = '') =>
    call(ac(), 'UpdateActionResult', { instanceName, actionDigest, actionResult });
  const get = (actionDigest: object, extra: object = {}, instanceName = ''): Promise<any> =>
    call(ac(), 'GetActionResult', { instanceName, actionDigest, ...extra });

  beforeAll(async () => {
    d = await startTestDaemon();
  });
  afterAll(() => d.stop());

  it('answers a miss with a gRPC NOT_FOUND', async () => {
    const a = newAction();
    await expectGrpcError(get(a), NOT_FOUND, a.hash);
  });

  it('returns what was stored, with output files, exit code and stdout', async () => {
    const out = bytes(5000, 1);
    const stdout = Buffer.from('hello from the action\n');
    await upload(out, stdout);
    const a = newAction();
    const result = { exitCode: 0, outputFiles: [{ path: 'out/bin', digest: digestOf(out), isExecutable: true }], stdoutDigest: digestOf(stdout) };
    const stored: any = await update(a, result);
    expect(stored.outputFiles[0].path).toBe('out/bin');
    const got = await get(a);
    expect(got.outputFiles).toHaveLength(1);
    expect(got.outputFiles[0]).toMatchObject({ path: 'out/bin', digest: digestOf(out), isExecutable: true });
    expect(got.stdoutDigest).toEqual(digestOf(stdout));
    expect(got.stdoutRaw.length).toBe(0);
  });

  it('is a hit when stdout/stderr are the empty blob, which nobody uploads (Bazel)', async () => {
    const a = newAction();
    await update(a, { exitCode: 0, stdoutDigest: EMPTY, stderrDigest: EMPTY, outputFiles: [{ path: 'empty', digest: EMPTY }] });
    expect((await get(a)).stdoutDigest).toEqual(EMPTY);
  });

  it('is a miss while an output file, stdout or stderr blob is absent, and a hit once it is there', async () => {
    const out = bytes(3000, 2);
    const stderr = Buffer.from('warning: something\n');
    const a = newAction();
    const b = newAction();
    await update(a, { outputFiles: [{ path: 'o', digest: digestOf(out) }] });
    await update(b, { stderrDigest: digestOf(stderr) });
    await expectGrpcError(get(a), NOT_FOUND);
    await expectGrpcError(get(b), NOT_FOUND);
    await upload(out, stderr);
    expect((await get(a)).outputFiles[0].digest).toEqual(digestOf(out));
    expect((await get(b)).stderrDigest).toEqual(digestOf(stderr));
  });

  describe('output directories', () => {
    const enc = (dir: re.IDirectory): Buffer => Buffer.from(re.Directory.encode(dir).finish());
    const f1 = bytes(100, 10);
    const f2 = bytes(70_000, 11);
    const sub = { files: [{ name: 'lib.so', digest: digestOf(f2) }] };
    const root = { files: [{ name: 'a.txt', digest: digestOf(f1) }], directories: [{ name: 'lib', digest: digestOf(enc(sub)) }] };
    const tree = Buffer.from(re.Tree.encode({ root, children: [sub] }).finish());

    it('a result with a tree_digest (Tree message) is a hit when the Tree and every file are present', async () => {
      const a = newAction();
      await update(a, { outputDirectories: [{ path: 'install', treeDigest: digestOf(tree) }] });
      await expectGrpcError(get(a), NOT_FOUND); // nothing uploaded yet
      await upload(tree, f1);
      await expectGrpcError(get(a), NOT_FOUND); // lib/lib.so still missing
      await upload(f2);
      const got = await get(a);
      expect(got.outputDirectories[0]).toMatchObject({ path: 'install', treeDigest: digestOf(tree) });
    });

    it('a result with a root_directory_digest is a hit only when every Directory and file is present', async () => {
      const g1 = bytes(55, 12);
      const sub2 = { files: [{ name: 'x', digest: digestOf(g1) }] };
      const root2 = { directories: [{ name: 's', digest: digestOf(enc(sub2)) }] };
      const a = newAction();
      await update(a, { outputDirectories: [{ path: '.', rootDirectoryDigest: digestOf(enc(root2)) }] });
      await upload(enc(root2), g1);
      await expectGrpcError(get(a), NOT_FOUND); // sub2 Directory missing
      await upload(enc(sub2));
      expect((await get(a)).outputDirectories[0].rootDirectoryDigest).toEqual(digestOf(enc(root2)));
    });
  });

  it('inline_stdout and inline_stderr return the bytes in stdout_raw and stderr_raw', async () => {
    const stdout = Buffer.from('out text');
    const stderr = Buffer.from('err text');
    const file = bytes(500, 20);
    await upload(stdout, stderr, file);
    const a = newAction();
    await update(a, { stdoutDigest: digestOf(stdout), stderrDigest: digestOf(stderr), outputFiles: [{ path: 'f', digest: digestOf(file) }] });
    const got = await get(a, { inlineStdout: true });
    expect(Buffer.from(got.stdoutRaw).toString()).toBe('out text');
    expect(got.stderrRaw.length).toBe(0);
    expect(got.stdoutDigest).toEqual(digestOf(stdout));
    const both = await get(a, { inlineStdout: true, inlineStderr: true, inlineOutputFiles: ['f'] });
    expect(Buffer.from(both.stderrRaw).toString()).toBe('err text');
    expect(Buffer.from(both.outputFiles[0].contents).equals(file)).toBe(true);
  });

  it('keeps instances apart', async () => {
    const a = newAction();
    await update(a, { exitCode: 0 }, 'team-a');
    await update(a, { exitCode: 0, stdoutDigest: EMPTY, executionMetadata: { worker: 'b' } }, 'team-b/linux');
    expect((await get(a, {}, 'team-a')).executionMetadata).toBeNull();
    expect((await get(a, {}, 'team-b/linux')).executionMetadata.worker).toBe('b');
    await expectGrpcError(get(a), NOT_FOUND);
    await expectGrpcError(get(a, {}, 'team-c'), NOT_FOUND);
  });

  it('refuses malformed digests, naming the field', async () => {
    await expectGrpcError(get({ hash: 'xyz', sizeBytes: 1 }), INVALID_ARGUMENT, 'action_digest', 'xyz');
    await expectGrpcError(update(newAction(), { outputFiles: [{ path: 'p', digest: { hash: 'bad', sizeBytes: 1 } }] }), INVALID_ARGUMENT, 'output_files[0]');
    await expectGrpcError(update(newAction(), { outputFiles: [{ digest: EMPTY }] }), INVALID_ARGUMENT, 'path');
    await expectGrpcError(call(ac(), 'UpdateActionResult', { actionDigest: newAction() }), INVALID_ARGUMENT, 'action_result');
  });
});
