import { randomBytes } from 'node:crypto';
import { lstatSync, existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { treeFromDirectory, type LocalTree } from '../../src/client/merkle.js';
import { call, connect } from '../../src/client/reapi-client.js';
import { Digest } from '../../src/digest/digest.js';
import { bytestream, longrunning, re } from '../../src/proto.js';
import { resolveRunAs } from '../../src/host/run-as.js';
import { findBubblewrap } from '../../src/runner/bubblewrap-runner.js';
import { uploadBusyboxRoot } from '../helpers/action-batch.js';
import { BUSYBOX } from '../helpers/busybox-root.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { execute, readBlob, uploadAction, uploadTree } from '../helpers/exec-client.js';
import { Gate } from '../helpers/gate.js';
import { cannotCreateUsers, createTestUser, grpcCallAs } from '../helpers/other-user.js';
import { parseSocketResults, RE, socketClientRoot, type PlanStep } from '../helpers/socket-client.js';

/**
 * remoteApisSocketPath (BuildStream's `sandbox: remote-apis-socket`): an action sees a UNIX
 * socket that speaks REAPI to this server. The action here is `node client.mjs` in the
 * host-tools sandbox (Node from the host), making the calls of a plan the test encoded.
 */
const missing = !BUSYBOX ? 'busybox-static' : !findBubblewrap() ? 'bubblewrap' : undefined;
// The socket as the action sees it: BuildStream sends the path without its leading "/",
// relative to the input root, which the host-tools sandbox mounts at /tmp/reexec-build.
const SOCKET_PROPERTY = 'sock/reapi.sock';
const SOCKET_INSIDE = '/tmp/reexec-build/sock/reapi.sock';

type Clients = ReturnType<typeof connect>;

const step = (label: string, service: string, method: string, request: Uint8Array): PlanStep => ({ label, path: `/${service}/${method}`, request });

/** Upload the client, its plan and an action that runs it with a REAPI socket. */
async function clientAction(clients: Clients, steps: PlanStep[], extra: Array<[string, string]> = []): Promise<{ action: Digest; cleanup(): void }> {
  const dir = socketClientRoot(SOCKET_INSIDE, steps);
  const tree: LocalTree = await treeFromDirectory(dir);
  await uploadTree(clients, tree);
  const action = await uploadAction(clients, tree.root, {
    args: [process.execPath, 'client.mjs', 'plan.json'],
    platform: [['OSFamily', 'linux'], ['reexec-sandbox', 'host-tools'], ['remoteApisSocketPath', SOCKET_PROPERTY], ...extra],
    // Never shared with a run of another test, never a cache hit.
    doNotCache: true,
  });
  return { action, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

async function stdoutOf(clients: Clients, response: re.IExecuteResponse | undefined): Promise<string> {
  expect(response?.status?.code ?? 0, response?.status?.message ?? '').toBe(0);
  const result = response!.result!;
  const out = (await readBlob(clients, result.stdoutDigest)).toString();
  expect(result.exitCode, `client exited ${result.exitCode}: ${(await readBlob(clients, result.stderrDigest)).toString()}`).toBe(0);
  return out;
}

describe.skipIf(missing)(`an action's REAPI socket (remoteApisSocketPath)${missing ? ` (skipped: apt-get install ${missing})` : ''}`, () => {
  let d: TestDaemon;
  let gate: Gate;
  let busybox: { tree: LocalTree; hostRoot: string };

  beforeAll(async () => {
    // One worker slot: the action holding it must still get its nested Execute run.
    d = await startTestDaemon((c) => {
      c.execution.pools = [{ name: 'native', isa: ['x86-64'], slots: 1 }];
    });
    gate = await Gate.start();
    busybox = await uploadBusyboxRoot(d.clients);
  });
  afterAll(async () => {
    await gate?.close();
    await d?.stop();
    if (busybox) rmSync(busybox.hostRoot, { recursive: true, force: true });
  });

  it(
    'serves CAS, ByteStream, ActionCache, Capabilities and Execution, runs a nested Execute on a one-slot server, and nothing else',
    async () => {
      const blob = randomBytes(1000);
      const blobDigest = Digest.compute(blob);
      const absent = Digest.compute(randomBytes(10));
      const token = randomBytes(6).toString('hex');
      const nested = await uploadAction(d.clients, busybox.tree.root, { args: ['sh', '-c', `echo nested ${token}; cat /proc/sys/kernel/random/uuid`] });
      const steps: PlanStep[] = [
        { label: 'gate', get: `http://127.0.0.1:${gate.port}/outer` },
        step('caps', `${RE}.Capabilities`, 'GetCapabilities', re.GetCapabilitiesRequest.encode({}).finish()),
        step('update', `${RE}.ContentAddressableStorage`, 'BatchUpdateBlobs', re.BatchUpdateBlobsRequest.encode({ requests: [{ digest: blobDigest.toProto(), data: blob }] }).finish()),
        step('read', `${RE}.ContentAddressableStorage`, 'BatchReadBlobs', re.BatchReadBlobsRequest.encode({ digests: [blobDigest.toProto()] }).finish()),
        step('missing', `${RE}.ContentAddressableStorage`, 'FindMissingBlobs', re.FindMissingBlobsRequest.encode({ blobDigests: [blobDigest.toProto(), absent.toProto()] }).finish()),
        step('bytestream', 'google.bytestream.ByteStream', 'Read', bytestream.ReadRequest.encode({ resourceName: `blobs/${blobDigest.hash}/${blobDigest.sizeBytes}` }).finish()),
        step('execute', `${RE}.Execution`, 'Execute', re.ExecuteRequest.encode({ actionDigest: nested.toProto() }).finish()),
        step('ac', `${RE}.ActionCache`, 'GetActionResult', re.GetActionResultRequest.encode({ actionDigest: nested.toProto() }).finish()),
        // Not served through the socket: other clients' operations, the admin API, Remote Asset.
        step('operations', 'google.longrunning.Operations', 'ListOperations', longrunning.ListOperationsRequest.encode({ name: '', pageSize: 10 }).finish()),
        step('admin', 'reexec.admin.v1.Admin', 'GetStatus', new Uint8Array()),
        step('asset', 'build.bazel.remote.asset.v1.Fetch', 'FetchBlob', new Uint8Array()),
      ];
      const { action, cleanup } = await clientAction(d.clients, steps, [['network', 'on']]);
      try {
        const running = execute(d.clients, action);
        // While the action runs, its socket exists on the host, in a private directory.
        await gate.arrived(1, 'outer');
        const open = d.daemon.execution!.nestedApi!.openSockets!;
        expect(open).toHaveLength(1);
        expect(lstatSync(open[0]!).isSocket()).toBe(true);
        expect(Buffer.byteLength(open[0]!)).toBeLessThanOrEqual(107);
        const dir = statSync(dirname(open[0]!));
        const runAs = resolveRunAs('auto').user;
        if (runAs) {
          // A daemon run as root (CI): the action runs as the run-as user, which may traverse the
          // directory (its group) and connect (the socket is its own, 0600); nobody else may.
          expect([dir.uid, dir.gid, dir.mode & 0o777]).toEqual([0, runAs.gid, 0o710]);
          const sock = statSync(open[0]!);
          expect([sock.uid, sock.mode & 0o777]).toEqual([runAs.uid, 0o600]);
          if (!cannotCreateUsers()) {
            const other = createTestUser();
            try {
              expect(await grpcCallAs(other, `unix:${open[0]!}`, `/${RE}.Capabilities/GetCapabilities`)).toEqual({ error: 'EACCES' });
            } finally {
              other.remove();
            }
          }
        } else {
          expect(dir.mode & 0o777).toBe(0o700);
        }
        gate.open();
        const { response } = await running;
        const results = parseSocketResults(await stdoutOf(d.clients, response));

        const caps = re.ServerCapabilities.decode(results.caps!.responses[0]!);
        expect(caps.executionCapabilities?.execEnabled).toBe(true);
        expect(caps.cacheCapabilities?.actionCacheUpdateCapabilities?.updateEnabled).toBe(true);
        const update = re.BatchUpdateBlobsResponse.decode(results.update!.responses[0]!);
        expect(update.responses.map((r) => r.status?.code ?? 0)).toEqual([0]);
        const read = re.BatchReadBlobsResponse.decode(results.read!.responses[0]!);
        expect(Buffer.from(read.responses[0]!.data ?? []).equals(blob)).toBe(true);
        const missingBlobs = re.FindMissingBlobsResponse.decode(results.missing!.responses[0]!);
        expect(missingBlobs.missingBlobDigests.map((x) => x.hash)).toEqual([absent.hash]);
        expect(results.bytestream!.status).toBe(0);
        expect(Buffer.concat(results.bytestream!.responses.map((r) => bytestream.ReadResponse.decode(r).data)).equals(blob)).toBe(true);
        // The blob the action uploaded is in the server's CAS.
        expect((await readBlob(d.clients, blobDigest.toProto())).equals(blob)).toBe(true);

        // The nested Execute ran although the one slot was held by the action waiting on it.
        expect(results.execute!.status, results.execute!.message).toBe(0);
        const ops = results.execute!.responses.map((b) => longrunning.Operation.decode(b));
        const last = ops[ops.length - 1]!;
        expect(last.done).toBe(true);
        const nestedResponse = re.ExecuteResponse.decode(last.response!.value!);
        const nestedOut = await stdoutOf(d.clients, nestedResponse);
        expect(nestedOut).toMatch(new RegExp(`^nested ${token}\\n[0-9a-f-]{36}\\n$`));
        expect(results.ac!.status).toBe(0);
        expect(re.ActionResult.decode(results.ac!.responses[0]!).stdoutDigest?.hash).toBe(nestedResponse.result!.stdoutDigest!.hash);

        for (const label of ['operations', 'admin', 'asset']) expect(results[label]!.status, `${label}: ${results[label]!.message}`).toBe(12); // UNIMPLEMENTED

        // The socket went with the action.
        expect(d.daemon.execution!.nestedApi!.openSockets).toEqual([]);
        expect(existsSync(open[0]!)).toBe(false);
      } finally {
        cleanup();
      }
    },
    120_000,
  );

  it('refuses a socket path that leaves the input root or is too long for a UNIX socket, at Execute time', async () => {
    for (const [path, why] of [
      ['../escape.sock', /leaves the input root/],
      [`${'x'.repeat(100)}/reapi.sock`, /longer than the 107 bytes/],
      ['/', /names the root directory/],
    ] as const) {
      const action = await uploadAction(d.clients, busybox.tree.root, { args: ['true'], platform: [['OSFamily', 'linux'], ['remoteApisSocketPath', path]] });
      const { error } = await execute(d.clients, action);
      expect(error?.code, path).toBe(3); // INVALID_ARGUMENT
      expect(error?.details).toMatch(why);
      expect(error?.details).toContain('remoteApisSocketPath');
    }
  });

  it('puts the socket where a BuildStream sandbox asks, in a rootfs action too', async () => {
    // The busybox root has no client, but the action can see the socket is there; the mount
    // point is the server's, not the action's: it is not an output.
    const action = await uploadAction(d.clients, busybox.tree.root, {
      args: ['sh', '-c', 'test -S /tmp/sub/reapi.sock && echo socket-there; ls /tmp/sub; echo kept > /tmp/sub/made-by-action'],
      platform: [['OSFamily', 'linux'], ['remoteApisSocketPath', 'tmp/sub/reapi.sock']],
      outputPaths: ['tmp'],
      doNotCache: true,
    });
    const { response } = await execute(d.clients, action);
    expect(await stdoutOf(d.clients, response)).toBe('socket-there\nreapi.sock\n');
    const dir = response!.result!.outputDirectories!.find((o) => o.path === 'tmp')!;
    const tree = re.Tree.decode(await readBlob(d.clients, dir.treeDigest));
    const files = [tree.root!, ...tree.children].flatMap((c) => (c.files ?? []).map((f) => f.name));
    expect(files).toEqual(['made-by-action']);
  });
});

describe.skipIf(missing)('an action’s REAPI socket has the rights of the client that sent the action', () => {
  let d: TestDaemon;
  let dir: string;
  const ALL = `all-${randomBytes(12).toString('hex')}`;
  const RUNNER = `runner-${randomBytes(12).toString('hex')}`;
  let admin: Clients;
  let runner: Clients;
  let busybox: { tree: LocalTree; hostRoot: string };

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'reexec-nested-tokens-'));
    writeFileSync(join(dir, 'tokens.yaml'), `${ALL}: all\n${RUNNER}: read, execute\n`);
    d = await startTestDaemon((c) => {
      c.auth = { ...c.auth, tokenFile: join(dir, 'tokens.yaml'), anonymous: [] };
    });
    admin = connect(d.address, {}, { token: ALL });
    runner = connect(d.address, {}, { token: RUNNER });
    busybox = await uploadBusyboxRoot(admin);
  });
  afterAll(async () => {
    admin?.close();
    runner?.close();
    await d?.stop();
    if (busybox) rmSync(busybox.hostRoot, { recursive: true, force: true });
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('a client with read and execute rights: its action reads and executes, but cannot write', async () => {
    const known = Buffer.from(`known ${randomBytes(4).toString('hex')}`);
    const knownDigest = Digest.compute(known);
    await call(admin.cas, 'BatchUpdateBlobs', { requests: [{ digest: knownDigest.toProto(), data: known }] });
    const fresh = randomBytes(100);
    const nested = await uploadAction(admin, busybox.tree.root, { args: ['sh', '-c', 'echo ran'], doNotCache: true });
    const { action, cleanup } = await clientAction(admin, [
      step('caps', `${RE}.Capabilities`, 'GetCapabilities', re.GetCapabilitiesRequest.encode({}).finish()),
      step('update', `${RE}.ContentAddressableStorage`, 'BatchUpdateBlobs', re.BatchUpdateBlobsRequest.encode({ requests: [{ digest: Digest.compute(fresh).toProto(), data: fresh }] }).finish()),
      step('read', `${RE}.ContentAddressableStorage`, 'BatchReadBlobs', re.BatchReadBlobsRequest.encode({ digests: [knownDigest.toProto()] }).finish()),
      step('execute', `${RE}.Execution`, 'Execute', re.ExecuteRequest.encode({ actionDigest: nested.toProto() }).finish()),
    ]);
    try {
      const { response, error } = await execute(runner, action);
      expect(error).toBeUndefined();
      const results = parseSocketResults(await stdoutOf(admin, response));
      const caps = re.ServerCapabilities.decode(results.caps!.responses[0]!);
      expect(caps.cacheCapabilities?.actionCacheUpdateCapabilities?.updateEnabled).toBe(false);
      expect(caps.executionCapabilities?.execEnabled).toBe(true);
      expect(results.update!.status).toBe(7); // PERMISSION_DENIED
      expect(results.update!.message).toMatch(/"write" right/);
      expect(results.read!.status).toBe(0);
      expect(Buffer.from(re.BatchReadBlobsResponse.decode(results.read!.responses[0]!).responses[0]!.data ?? []).equals(known)).toBe(true);
      expect(results.execute!.status, results.execute!.message).toBe(0);
    } finally {
      cleanup();
    }
  }, 120_000);
});

