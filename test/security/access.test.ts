import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, connect } from '../../src/client/reapi-client.js';
import { localAccess, type ClientSecurity } from '../../src/client/client-security.js';
import { collectGarbageRemote } from '../../src/gc/remote-gc.js';
import { createTlsSetup, type TlsSetup } from '../../src/host/tls-setup.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { digestOf, expectGrpcError } from '../helpers/storage.js';
import { caseTally } from './tally.js';
import { statusFromMessage } from '../../src/services/admin-messages.js';

type Clients = ReturnType<typeof connect>;

/** ByteStream.Write of a small blob in one message. */
function write(c: Clients, data: Buffer): Promise<unknown> {
  const d = digestOf(data);
  return new Promise((resolve, reject) => {
    const s = (c.byteStream as any).Write((err: grpc.ServiceError | null, res: unknown) => (err ? reject(err) : resolve(res)));
    s.write({ resourceName: `uploads/2b7d4f1e-0000-4000-8000-000000000001/blobs/${d.hash}/${d.sizeBytes}`, writeOffset: 0, data, finishWrite: true });
    s.end();
  });
}

function serverStreamError(stream: grpc.ClientReadableStream<unknown>): Promise<grpc.ServiceError | undefined> {
  return new Promise((resolve) => {
    stream.on('data', () => undefined);
    stream.on('error', (e: grpc.ServiceError) => resolve(e));
    stream.on('end', () => resolve(undefined));
  });
}

const noOpenssl = spawnSync('openssl', ['version']).status !== 0;

describe.skipIf(noOpenssl)(`TLS, mutual TLS and access tokens${noOpenssl ? ' (skipped: install openssl)' : ''}`, () => {
  const tally = caseTally('access control');
  let dir: string;
  let tls: TlsSetup;
  let d: TestDaemon;
  let tcp: string;
  let unix: string;
  const opened: Clients[] = [];
  const client = (sec: ClientSecurity, endpoint = tcp): Clients => {
    const c = connect(endpoint, {}, sec);
    opened.push(c);
    return c;
  };
  let mtls: ClientSecurity;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'reexec-tls-'));
    tls = await createTlsSetup(join(dir, 'tls'), { listen: ['127.0.0.1:0'] });
    d = await startTestDaemon((c) => {
      c.listen = ['127.0.0.1:0', `unix:${join(dir, 'plain.sock')}`];
      c.tls = { cert: tls.serverCert, key: tls.serverKey, clientCa: tls.caCert };
      c.auth = { tokenFile: tls.tokenFile, anonymous: [], localUsers: [] };
    });
    tcp = d.daemon.addresses[0]!;
    unix = d.daemon.addresses[1]!;
    mtls = { tls: true, serverCa: readFileSync(tls.caCert), clientCert: readFileSync(tls.clientCert), clientKey: readFileSync(tls.clientKey) };
  });
  afterAll(async () => {
    for (const c of opened) c.close();
    await d?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const caps = (c: Clients): Promise<any> => call(c.capabilities, 'GetCapabilities', {});

  it('refuses clients without a valid certificate, and plaintext clients, at the TLS handshake', async () => {
    tally.add(3);
    const deadline = (): grpc.Metadata => new grpc.Metadata();
    const noCert = client({ tls: true, serverCa: readFileSync(tls.caCert), token: tls.tokens.client.token });
    await expect(call(noCert.capabilities, 'GetCapabilities', {}, deadline())).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE });
    const plain = client({ token: tls.tokens.client.token });
    await expect(call(plain.capabilities, 'GetCapabilities', {})).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE });
    // A certificate from another CA is no better.
    const other = await createTlsSetup(join(dir, 'other'), { listen: [] });
    const foreign = client({ ...mtls, clientCert: readFileSync(other.clientCert), clientKey: readFileSync(other.clientKey), token: tls.tokens.client.token });
    await expect(call(foreign.capabilities, 'GetCapabilities', {})).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE });
  });

  it('with a certificate: no token or a wrong one is UNAUTHENTICATED; health checks stay open', async () => {
    tally.add(4);
    await expectGrpcError(caps(client(mtls)), grpc.status.UNAUTHENTICATED, 'access token');
    await expectGrpcError(caps(client({ ...mtls, token: 'not-a-token-anyone-issued-0123456789' })), grpc.status.UNAUTHENTICATED, 'not valid');
    await expectGrpcError(call(client(mtls).cas, 'FindMissingBlobs', { blobDigests: [] }), grpc.status.UNAUTHENTICATED);
    const health = new grpc.Client(tcp, grpc.credentials.createSsl(mtls.serverCa!, mtls.clientKey!, mtls.clientCert!));
    const res = await new Promise<Buffer>((resolve, reject) =>
      health.makeUnaryRequest('/grpc.health.v1.Health/Check', (b: Buffer) => b, (b: Buffer) => b, Buffer.alloc(0), (err, r) => (err ? reject(err) : resolve(r!))),
    );
    health.close();
    expect(res.toString('hex')).toBe('0801'); // status: SERVING
  });

  it('a read-only token reads, sees update_enabled=false, and is refused every write with PERMISSION_DENIED', async () => {
    const ro = client({ ...mtls, token: tls.tokens.readOnly.token });
    const c = await caps(ro);
    expect(c.cacheCapabilities.actionCacheUpdateCapabilities.updateEnabled).toBe(false);
    expect(c.executionCapabilities.execEnabled).toBe(false);
    const blob = Buffer.from('written by the read-write token');
    await call(client({ ...mtls, token: tls.tokens.client.token }).cas, 'BatchUpdateBlobs', { requests: [{ digest: digestOf(blob), data: blob }] });
    const read: any = await call(ro.cas, 'BatchReadBlobs', { digests: [digestOf(blob)] });
    expect(Buffer.from(read.responses[0].data).toString()).toBe(blob.toString());
    await expectGrpcError(call(ro.actionCache, 'GetActionResult', { actionDigest: digestOf(Buffer.from('no such action')) }), grpc.status.NOT_FOUND);
    await expectGrpcError(call(ro.fetch, 'FetchBlob', { uris: ['urn:fdc:example:missing'] }), grpc.status.NOT_FOUND);

    const denied = [
      () => call(ro.cas, 'BatchUpdateBlobs', { requests: [{ digest: digestOf(Buffer.from('x')), data: Buffer.from('x') }] }),
      () => write(ro, Buffer.from('a blob the read-only token may not write')),
      () => call(ro.byteStream, 'QueryWriteStatus', { resourceName: `uploads/u/blobs/${digestOf(blob).hash}/${blob.length}` }),
      () => call(ro.actionCache, 'UpdateActionResult', { actionDigest: digestOf(Buffer.from('a')), actionResult: { exitCode: 0 } }),
      () => call(ro.push, 'PushBlob', { uris: ['urn:fdc:example:x'], blobDigest: digestOf(blob) }),
      () => call(ro.push, 'PushDirectory', { uris: ['urn:fdc:example:x'], rootDirectoryDigest: digestOf(Buffer.alloc(0)) }),
      () => call(ro.operations, 'ListOperations', {}),
      () => call(ro.admin, 'GetStatus', {}),
    ];
    tally.add(denied.length + 2);
    for (const p of denied) await expectGrpcError(p(), grpc.status.PERMISSION_DENIED, 'right');
    expect(await serverStreamError((ro.execution as any).Execute({ actionDigest: digestOf(Buffer.from('a')) }))).toMatchObject({ code: grpc.status.PERMISSION_DENIED });
    expect(await serverStreamError((ro.admin as any).CollectGarbage({ dryRun: true }))).toMatchObject({ code: grpc.status.PERMISSION_DENIED });
  });

  it('Remote Asset probes (no URI) get INVALID_ARGUMENT before any authorisation', async () => {
    const anonymous = client(mtls);
    const ro = client({ ...mtls, token: tls.tokens.readOnly.token });
    const bad = client({ ...mtls, token: 'wrong-token-wrong-token-wrong' });
    const probes = [
      () => call(anonymous.fetch, 'FetchBlob', {}),
      () => call(anonymous.fetch, 'FetchDirectory', {}),
      () => call(anonymous.push, 'PushBlob', {}),
      () => call(anonymous.push, 'PushDirectory', {}),
      () => call(ro.push, 'PushBlob', {}),
      () => call(ro.push, 'PushDirectory', { uris: [''] }),
      () => call(bad.push, 'PushDirectory', {}),
      () => call(bad.fetch, 'FetchDirectory', { uris: ['urn:x', ''] }),
    ];
    tally.add(probes.length);
    for (const p of probes) expect((await expectGrpcError(p(), grpc.status.INVALID_ARGUMENT)).details).toMatch(/URI|uris/);
    // With a URI, the same calls are authorised as usual.
    await expectGrpcError(call(anonymous.fetch, 'FetchBlob', { uris: ['urn:x'] }), grpc.status.UNAUTHENTICATED);
  });

  it('a read-write-execute token writes and sees update_enabled and exec_enabled; admin needs the admin token', async () => {
    tally.add(4);
    const rw = client({ ...mtls, token: tls.tokens.client.token });
    const c = await caps(rw);
    expect(c.cacheCapabilities.actionCacheUpdateCapabilities.updateEnabled).toBe(true);
    expect(c.executionCapabilities.execEnabled).toBe(true);
    const res: any = await write(rw, Buffer.from('written over mutual TLS with a token'));
    expect(Number(res.committedSize)).toBe(36);
    await expectGrpcError(call(rw.admin, 'GetStatus', {}), grpc.status.PERMISSION_DENIED, '"admin"');
    const admin = client({ ...mtls, token: tls.tokens.admin.token });
    const status: any = await call(admin.admin, 'GetStatus', {});
    expect(statusFromMessage(status).dataDir).toBe(d.dataDir);
  });

  it('re-reads the token file: new tokens work and revoked ones are refused, without a restart', async () => {
    tally.add(3);
    const fresh = 'a-token-added-while-running-' + Date.now();
    const before = readFileSync(tls.tokenFile, 'utf8');
    writeFileSync(tls.tokenFile, before + `${fresh}: read\n`);
    const c = client({ ...mtls, token: fresh });
    await waitFor(async () => (await caps(c).then(() => true, () => false)));
    // Revoke the read-only token: its calls fail from now on.
    writeFileSync(tls.tokenFile, before.split('\n').filter((l) => !l.startsWith(tls.tokens.readOnly.token)).join('\n'));
    const ro = client({ ...mtls, token: tls.tokens.readOnly.token });
    await waitFor(async () => (await caps(ro).then(() => false, (e) => e.code === grpc.status.UNAUTHENTICATED)));
    // A broken file keeps the tokens in force (the daemon logs why) rather than locking everyone out.
    writeFileSync(tls.tokenFile, before + ': [not yaml');
    await new Promise((r) => setTimeout(r, 1300));
    await caps(client({ ...mtls, token: tls.tokens.client.token }));
    writeFileSync(tls.tokenFile, before);
    await waitFor(async () => (await caps(ro).then(() => true, () => false)));
  });

  it('a plain unix socket listener serves the same tokens, and admin through it with the admin token', async () => {
    tally.add(3);
    await expectGrpcError(caps(client({}, unix)), grpc.status.UNAUTHENTICATED);
    expect((await caps(client({ token: tls.tokens.readOnly.token }, unix))).cacheCapabilities.actionCacheUpdateCapabilities.updateEnabled).toBe(false);
    // What `reexec status` and `reexec gc` use: the unix socket and an admin token from the token file.
    const local = localAccess(d.daemon.config);
    expect(local.endpoint).toBe(unix);
    await call(client(local.security, local.endpoint).admin, 'GetStatus', {});
  });

  it('localAccess reaches a TLS-only daemon with the CA, client certificate and admin token of `reexec init --tls`', async () => {
    tally.add(2);
    const config = { ...d.daemon.config, listen: [tcp] };
    const local = localAccess(config);
    expect(local.security.tls).toBe(true);
    await call(client(local.security, local.endpoint).admin, 'GetStatus', {});
    // What `reexec gc` does with it.
    const summary = await collectGarbageRemote(local.endpoint, { dryRun: true }, undefined, { security: local.security });
    expect(summary).toBeTruthy();
    await expect(collectGarbageRemote(local.endpoint, { dryRun: true }, undefined, { security: { ...local.security, token: tls.tokens.client.token } })).rejects.toMatchObject({
      code: grpc.status.PERMISSION_DENIED,
    });
  });
});

async function waitFor(check: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('condition not met in time');
}
