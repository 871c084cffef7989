import type * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { re } from '../../src/proto.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { bytes, call, digestOf, expectGrpcError } from '../helpers/storage.js';

const INVALID_ARGUMENT = 3;
const NOT_FOUND = 5;
const EMPTY = { hash: 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855', sizeBytes: 0 };
const URN = 'urn:fdc:buildstream.build:2020:artifact:proj/elem.bst/';

let n = 0;
const uniq = (): string => `${URN}${Date.now()}-${n++}`;
const enc = (dir: re.IDirectory): Buffer => Buffer.from(re.Directory.encode(dir).finish());

describe('Remote Asset', () => {
  let d: TestDaemon;
  const fetch = (): grpc.Client & Record<string, any> => d.clients.fetch;
  const push = (): grpc.Client & Record<string, any> => d.clients.push;
  const upload = async (...blobs: Buffer[]): Promise<void> => {
    const res: any = await call(d.clients.cas, 'BatchUpdateBlobs', { requests: blobs.map((b) => ({ digest: digestOf(b), data: b })) });
    for (const r of res.responses) expect(r.status?.code ?? 0).toBe(0);
  };

  beforeAll(async () => {
    d = await startTestDaemon();
  });
  afterAll(() => d.stop());

  it('answers probes without URIs with INVALID_ARGUMENT on all four RPCs (BuildStream detects the service so)', async () => {
    await expectGrpcError(call(fetch(), 'FetchBlob', {}), INVALID_ARGUMENT);
    await expectGrpcError(call(fetch(), 'FetchDirectory', {}), INVALID_ARGUMENT);
    await expectGrpcError(call(push(), 'PushBlob', {}), INVALID_ARGUMENT);
    await expectGrpcError(call(push(), 'PushDirectory', {}), INVALID_ARGUMENT);
    // Even with a bad instance name or digest: the URI check comes first.
    await expectGrpcError(call(push(), 'PushBlob', { instanceName: 'a//b', blobDigest: { hash: 'x' } }), INVALID_ARGUMENT, 'URI');
  });

  it('answers an unknown asset with a gRPC NOT_FOUND error, not an OK reply', async () => {
    const uri = uniq();
    await expectGrpcError(call(fetch(), 'FetchBlob', { uris: [uri] }), NOT_FOUND, uri);
    await expectGrpcError(call(fetch(), 'FetchDirectory', { uris: [uri] }), NOT_FOUND, uri);
  });

  it('pushes and fetches a blob under several URIs; qualifier order is irrelevant, a different qualifier set misses', async () => {
    const blob = bytes(2000, 1);
    await upload(blob);
    const strong = uniq();
    const weak = uniq();
    const q = [
      { name: 'resource_type', value: 'application/x-bst-artifact' },
      { name: 'vcs.commit', value: 'abc' },
    ];
    await call(push(), 'PushBlob', { uris: [strong, weak], qualifiers: q, blobDigest: digestOf(blob) });
    for (const uri of [strong, weak]) {
      const res: any = await call(fetch(), 'FetchBlob', { uris: [uri], qualifiers: [...q].reverse() });
      expect(res.blobDigest).toEqual(digestOf(blob));
      expect(res.uri).toBe(uri);
      expect(res.status?.code ?? 0).toBe(0);
    }
    // The first URI that is known answers.
    const res: any = await call(fetch(), 'FetchBlob', { uris: [uniq(), weak], qualifiers: q });
    expect(res.uri).toBe(weak);
    await expectGrpcError(call(fetch(), 'FetchBlob', { uris: [strong] }), NOT_FOUND);
    await expectGrpcError(call(fetch(), 'FetchBlob', { uris: [strong], qualifiers: q.slice(0, 1) }), NOT_FOUND);
    await expectGrpcError(call(fetch(), 'FetchBlob', { uris: [strong], qualifiers: [q[0], { name: 'vcs.commit', value: 'abd' }] }), NOT_FOUND);
    await expectGrpcError(call(fetch(), 'FetchBlob', { uris: [strong], qualifiers: [...q, { name: 'extra', value: '' }] }), NOT_FOUND);
    // A blob binding is not a directory binding.
    await expectGrpcError(call(fetch(), 'FetchDirectory', { uris: [strong], qualifiers: q }), NOT_FOUND);
  });

  it('a later push to the same URI and qualifiers replaces the binding', async () => {
    const a = bytes(10, 2);
    const b = bytes(20, 3);
    await upload(a, b);
    const uri = uniq();
    await call(push(), 'PushBlob', { uris: [uri], blobDigest: digestOf(a) });
    await call(push(), 'PushBlob', { uris: [uri], blobDigest: digestOf(b) });
    expect(((await call(fetch(), 'FetchBlob', { uris: [uri] })) as any).blobDigest).toEqual(digestOf(b));
  });

  it('a blob asset whose blob is absent from the CAS is a miss', async () => {
    const blob = bytes(10, 4);
    const uri = uniq();
    await call(push(), 'PushBlob', { uris: [uri], blobDigest: digestOf(blob) });
    await expectGrpcError(call(fetch(), 'FetchBlob', { uris: [uri] }), NOT_FOUND);
    await upload(blob);
    expect(((await call(fetch(), 'FetchBlob', { uris: [uri] })) as any).blobDigest).toEqual(digestOf(blob));
  });

  it('pushes and fetches a directory (BuildStream source cache); it is a miss while any file or Directory under it is absent', async () => {
    const f1 = bytes(100, 5);
    const f2 = bytes(80_000, 6);
    const sub = enc({ files: [{ name: 'big', digest: digestOf(f2) }] });
    const root = enc({ files: [{ name: 'small', digest: digestOf(f1) }], directories: [{ name: 'sub', digest: digestOf(sub) }] });
    const uri = `urn:fdc:buildstream.build:2020:source:git/${n++}`;
    const q = [{ name: 'a', value: '1' }, { name: 'b', value: '2' }];
    await call(push(), 'PushDirectory', { uris: [uri], qualifiers: q, rootDirectoryDigest: digestOf(root) });
    await upload(root, f1);
    await expectGrpcError(call(fetch(), 'FetchDirectory', { uris: [uri], qualifiers: q }), NOT_FOUND);
    await upload(sub);
    await expectGrpcError(call(fetch(), 'FetchDirectory', { uris: [uri], qualifiers: q }), NOT_FOUND);
    await upload(f2);
    const res: any = await call(fetch(), 'FetchDirectory', { uris: [uri], qualifiers: [q[1], q[0]] });
    expect(res.rootDirectoryDigest).toEqual(digestOf(root));
    await expectGrpcError(call(fetch(), 'FetchBlob', { uris: [uri], qualifiers: q }), NOT_FOUND);
  });

  it('a pushed blob is never interpreted as a Directory', async () => {
    const notADir = Buffer.from([0xff, 0xff, 0xff, 0x01]);
    await upload(notADir);
    const uri = uniq();
    await call(push(), 'PushBlob', { uris: [uri], blobDigest: digestOf(notADir) });
    expect(((await call(fetch(), 'FetchBlob', { uris: [uri] })) as any).blobDigest).toEqual(digestOf(notADir));
  });

  it('is a miss while a referenced blob or directory is absent (BuildStream 2 artifacts)', async () => {
    const artifact = bytes(300, 7);
    const ref = bytes(400, 8);
    const refFile = bytes(500, 9);
    const refDir = enc({ files: [{ name: 'f', digest: digestOf(refFile) }] });
    await upload(artifact);
    const uri = uniq();
    await call(push(), 'PushBlob', {
      uris: [uri],
      blobDigest: digestOf(artifact),
      referencesBlobs: [digestOf(ref)],
      referencesDirectories: [digestOf(refDir)],
    });
    await expectGrpcError(call(fetch(), 'FetchBlob', { uris: [uri] }), NOT_FOUND);
    await upload(ref);
    await expectGrpcError(call(fetch(), 'FetchBlob', { uris: [uri] }), NOT_FOUND);
    await upload(refDir);
    await expectGrpcError(call(fetch(), 'FetchBlob', { uris: [uri] }), NOT_FOUND); // its file is missing
    await upload(refFile);
    expect(((await call(fetch(), 'FetchBlob', { uris: [uri] })) as any).blobDigest).toEqual(digestOf(artifact));
  });

  it('ignores empty digests in the reference lists (BuildStream up to 2.6 sends them)', async () => {
    const artifact = bytes(300, 10);
    const dir = enc({ files: [{ name: 'x', digest: digestOf(artifact) }] });
    await upload(artifact, dir);
    const blobUri = uniq();
    const dirUri = uniq();
    await call(push(), 'PushBlob', { uris: [blobUri], blobDigest: digestOf(artifact), referencesBlobs: [{}, EMPTY], referencesDirectories: [{}, EMPTY, { hash: '', sizeBytes: 0 }] });
    await call(push(), 'PushDirectory', { uris: [dirUri], rootDirectoryDigest: digestOf(dir), referencesBlobs: [{}], referencesDirectories: [{}] });
    expect(((await call(fetch(), 'FetchBlob', { uris: [blobUri] })) as any).blobDigest).toEqual(digestOf(artifact));
    expect(((await call(fetch(), 'FetchDirectory', { uris: [dirUri] })) as any).rootDirectoryDigest).toEqual(digestOf(dir));
  });

  it('refuses a malformed digest or qualifier, naming it', async () => {
    await expectGrpcError(call(push(), 'PushBlob', { uris: [uniq()], blobDigest: { hash: 'zz', sizeBytes: 2 } }), INVALID_ARGUMENT, 'blob_digest');
    await expectGrpcError(
      call(push(), 'PushBlob', { uris: [uniq()], blobDigest: EMPTY, referencesBlobs: [{}, { hash: 'nope', sizeBytes: 1 }] }),
      INVALID_ARGUMENT,
      'references_blobs[1]',
    );
    await expectGrpcError(call(push(), 'PushBlob', { uris: [uniq()], blobDigest: EMPTY, qualifiers: [{ name: 'q' }, { name: 'q' }] }), INVALID_ARGUMENT, '"q"');
    await expectGrpcError(call(push(), 'PushBlob', { uris: [uniq(), ''], blobDigest: EMPTY }), INVALID_ARGUMENT, 'uris[1]');
  });

  it('honours expire_at and oldest_content_accepted', async () => {
    const blob = bytes(40, 12);
    await upload(blob);
    const now = Math.floor(Date.now() / 1000);
    const expired = uniq();
    const alive = uniq();
    await call(push(), 'PushBlob', { uris: [expired], blobDigest: digestOf(blob), expireAt: { seconds: now - 10 } });
    await call(push(), 'PushBlob', { uris: [alive], blobDigest: digestOf(blob), expireAt: { seconds: now + 3600 } });
    await expectGrpcError(call(fetch(), 'FetchBlob', { uris: [expired] }), NOT_FOUND);
    const res: any = await call(fetch(), 'FetchBlob', { uris: [alive], oldestContentAccepted: { seconds: now - 60 } });
    expect(Number(res.expiresAt.seconds)).toBe(now + 3600);
    await expectGrpcError(call(fetch(), 'FetchBlob', { uris: [alive], oldestContentAccepted: { seconds: now + 60 } }), NOT_FOUND);
  });

  it('keeps instances apart', async () => {
    const blob = bytes(30, 11);
    await upload(blob);
    const uri = uniq();
    await call(push(), 'PushBlob', { instanceName: 'one', uris: [uri], blobDigest: digestOf(blob) });
    expect(((await call(fetch(), 'FetchBlob', { instanceName: 'one', uris: [uri] })) as any).blobDigest).toEqual(digestOf(blob));
    await expectGrpcError(call(fetch(), 'FetchBlob', { instanceName: 'two', uris: [uri] }), NOT_FOUND);
    await expectGrpcError(call(fetch(), 'FetchBlob', { uris: [uri] }), NOT_FOUND);
  });
});
