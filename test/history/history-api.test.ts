import { rmSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LocalTree } from '../../src/client/merkle.js';
import { call } from '../../src/client/reapi-client.js';
import type { Digest } from '../../src/digest/digest.js';
import { REQUEST_METADATA_HEADER } from '../../src/history/entry.js';
import { HistoryClient, HistoryRequestError } from '../../src/history/history-client.js';
import { longrunning, re } from '../../src/proto.js';
import { findBubblewrap } from '../../src/runner/bubblewrap-runner.js';
import { uploadBusyboxRoot } from '../helpers/action-batch.js';
import { BUSYBOX } from '../helpers/busybox-root.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { uploadAction } from '../helpers/exec-client.js';

const missing = !BUSYBOX ? 'busybox-static' : !findBubblewrap() ? 'bubblewrap' : undefined;

function metadata(m: re.IRequestMetadata): grpc.Metadata {
  const md = new grpc.Metadata();
  md.set(REQUEST_METADATA_HEADER, Buffer.from(re.RequestMetadata.encode(m).finish()));
  return md;
}

/** Execute with RequestMetadata; resolves to the last Operation's ExecuteResponse and name. */
function execute(d: TestDaemon, action: Digest, md: grpc.Metadata, extra: Record<string, unknown> = {}): Promise<{ name: string; response: re.ExecuteResponse }> {
  return new Promise((resolve, reject) => {
    let last: longrunning.Operation | undefined;
    const s = (d.clients.execution as any).Execute({ actionDigest: action.toProto(), ...extra }, md);
    s.on('data', (op: longrunning.Operation) => (last = op));
    s.on('error', reject);
    s.on('end', () => resolve({ name: last!.name, response: re.ExecuteResponse.decode(last!.response!.value!) }));
  });
}

describe.skipIf(missing)(`the action history over the Admin API${missing ? ` (skipped: install ${missing})` : ''}`, () => {
  let d: TestDaemon;
  let tree: LocalTree;
  let hostRoot: string;
  let history: HistoryClient;
  const bazel = (target: string, mnemonic: string) => metadata({ toolDetails: { toolName: 'bazel', toolVersion: '7.7.1' }, toolInvocationId: 'inv-1', targetId: target, actionMnemonic: mnemonic, actionId: 'a1', configurationId: 'k8-fastbuild' });

  beforeAll(async () => {
    d = await startTestDaemon((c) => {
      c.execution.pools = [{ name: 'native', isa: ['x86-64'], slots: 2 }];
    });
    ({ tree, hostRoot } = await uploadBusyboxRoot(d.clients));
    history = new HistoryClient(d.address);
  });

  afterAll(async () => {
    history?.close();
    await d?.stop();
    if (hostRoot) rmSync(hostRoot, { recursive: true, force: true });
  });

  it('records Executes (run, failed, cached) and GetActionResult hits and misses, with RequestMetadata', async () => {
    const ok = await uploadAction(d.clients, tree.root, { args: ['sh', '-c', 'echo hello; echo warn >&2'], outputPaths: ['out.txt'] });
    const failing = await uploadAction(d.clients, tree.root, { args: ['sh', '-c', 'echo partial; echo "it broke" >&2; exit 7'] });
    const first = await execute(d, ok, bazel('//app:hello', 'Genrule'));
    expect(first.response.result?.exitCode).toBe(0);
    const again = await execute(d, ok, bazel('//app:hello', 'Genrule'));
    expect(again.response.cachedResult).toBe(true);
    const bad = await execute(d, failing, bazel('//app:broken', 'Genrule'));
    expect(bad.response.result?.exitCode).toBe(7);
    await call(d.clients.actionCache, 'GetActionResult', { actionDigest: ok.toProto() }, bazel('//app:hello', 'Genrule'));
    await call(d.clients.actionCache, 'GetActionResult', { actionDigest: failing.toProto() }, bazel('//app:broken', 'Genrule')).catch((e: grpc.ServiceError) => expect(e.code).toBe(grpc.status.NOT_FOUND));

    const all = await history.list({ limit: 10 });
    expect(all.map((e) => `${e.kind} ${e.outcome}`)).toEqual(['lookup miss', 'lookup hit', 'execute ran', 'execute cached', 'execute ran']);
    const ran = all[4]!;
    expect(ran).toMatchObject({
      action: ok.toString(),
      digestFunction: 'sha256',
      operation: first.name,
      argv: ['sh', '-c', 'echo hello; echo warn >&2'],
      outputPaths: ['out.txt'],
      exitCode: 0,
      failed: false,
      request: { tool: 'bazel', toolVersion: '7.7.1', invocationId: 'inv-1', targetId: '//app:hello', mnemonic: 'Genrule', actionId: 'a1', configurationId: 'k8-fastbuild' },
    });
    expect(ran.client.peer).toMatch(/127\.0\.0\.1/);
    expect(ran.worker).toMatch(/^reexec\/native-\d$/);
    expect(ran.timings?.executionEnd).toBeGreaterThanOrEqual(ran.timings!.executionStart!);
    expect(ran.stdout).toMatch(/^[0-9a-f]{64}\/6$/);

    const failed = await history.list({ limit: 10, failedOnly: true });
    expect(failed).toHaveLength(1);
    expect(failed[0]).toMatchObject({ action: failing.toString(), exitCode: 7, failed: true, operation: bad.name });
    expect((await history.list({ target: 'broken' })).map((e) => e.kind)).toEqual(['lookup', 'execute']);
    expect(await history.list({ tool: 'recc' })).toEqual([]);
    expect(await history.list({ invocation: 'inv' })).toHaveLength(5);
    expect(await history.list({ sinceUnixMs: Date.now() + 60_000 })).toEqual([]);
  });

  it('show: command, environment, input root, outputs and the end of stderr; by operation, digest or hash prefix', async () => {
    const failing = await history.list({ failedOnly: true, limit: 1 });
    const e = failing[0]!;
    for (const ref of [e.action, e.action.slice(0, 10), e.operation!]) {
      const s = await history.show(ref);
      expect(s.actionDigest).toBe(e.action);
      expect(s.command?.arguments).toEqual(['sh', '-c', 'echo partial; echo "it broke" >&2; exit 7']);
      expect(s.command?.environment).toEqual([expect.objectContaining({ name: 'PATH', value: '/usr/bin:/bin' })]);
      expect(s.result?.exitCode).toBe(7);
      expect(Buffer.from(s.stderr!.tail!).toString()).toBe('it broke\n');
      expect(Buffer.from(s.stdout!.tail!).toString()).toBe('partial\n');
      expect(Number(s.inputRoot?.files)).toBeGreaterThan(0);
      expect(s.inputRoot?.largest?.[0]?.path).toBe('usr/bin/busybox');
      expect(s.missing).toEqual([]);
    }
    const chunks: Buffer[] = [];
    await history.readLog(e.action, 'stderr', (c) => void chunks.push(Buffer.from(c)));
    expect(Buffer.concat(chunks).toString()).toBe('it broke\n');
  });

  it('says what is unknown, ambiguous or malformed', async () => {
    const err = (p: Promise<unknown>) => p.then(() => undefined, (e: HistoryRequestError) => e);
    const unknown = await err(history.show('ffffffffffff'));
    expect(unknown).toBeInstanceOf(HistoryRequestError);
    expect(unknown!.code).toBe(grpc.status.NOT_FOUND);
    expect(unknown!.message).toMatch(/no action whose hash starts with ffffffffffff is in the action history.*history.keep-failed/);
    const full = await err(history.show(`${'e'.repeat(64)}/123`));
    expect(full!.message).toMatch(/not in the action history, and its Action is not in the CAS/);
    expect((await err(history.show('not a digest')))!.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect((await err(history.show('operations/nope')))!.code).toBe(grpc.status.NOT_FOUND);
  });

  it('explain: the closest earlier action of the same target, and the input file that changed', async () => {
    const v1 = await uploadAction(d.clients, tree.root, { args: ['sh', '-c', 'cat /etc/greeting || true'], env: [['PATH', '/usr/bin:/bin'], ['MODE', 'a']] });
    await execute(d, v1, bazel('//app:greet', 'Genrule'));
    // The same target again, with another environment and one input file added.
    const { treeFromDirectory } = await import('../../src/client/merkle.js');
    const { mkdirSync, writeFileSync } = await import('node:fs');
    const { join } = await import('node:path');
    mkdirSync(join(hostRoot, 'etc'), { recursive: true });
    writeFileSync(join(hostRoot, 'etc', 'greeting'), 'hi\n');
    const tree2 = await treeFromDirectory(hostRoot);
    const { uploadTree } = await import('../helpers/exec-client.js');
    await uploadTree(d.clients, tree2);
    const v2 = await uploadAction(d.clients, tree2.root, { args: ['sh', '-c', 'cat /etc/greeting || true'], env: [['PATH', '/usr/bin:/bin'], ['MODE', 'b']] });
    await execute(d, v2, bazel('//app:greet', 'Genrule'));
    const x = await history.explain(v2.toString());
    expect(x.otherActionDigest).toBe(v1.toString());
    expect(x.chosenBy).toBe('target');
    expect(x.environment).toEqual([expect.objectContaining({ name: 'MODE', before: 'a', after: 'b' })]);
    expect(x.arguments).toEqual([]);
    expect(x.inputs.map((p) => `${p.change} ${p.path} ${p.kind}`)).toEqual(['added etc/greeting file']);
    const given = await history.explain(v2.toString(), v1.toString());
    expect(given.chosenBy).toBe('given');
  });
});

describe('the action history: identity and switching it off', () => {
  it('records the name of the token a call presents', async () => {
    const { mkdtempSync, writeFileSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const dir = mkdtempSync(join(tmpdir(), 'reexec-history-token-'));
    const token = 'ci-token-0123456789abcdef';
    writeFileSync(join(dir, 'tokens.yaml'), `${token}: {rights: all, name: ci-runner}\n`);
    const d = await startTestDaemon((c) => {
      c.auth = { tokenFile: join(dir, 'tokens.yaml'), anonymous: [], localUsers: [] };
      c.execution.enabled = false;
    });
    const { connect } = await import('../../src/client/reapi-client.js');
    const clients = connect(d.address, {}, { token });
    const history = new HistoryClient(d.address, { token });
    try {
      const digest = (await import('../../src/digest/digest.js')).Digest.compute(Buffer.from('never run'));
      await call(clients.actionCache, 'GetActionResult', { actionDigest: digest.toProto() }).catch((e: grpc.ServiceError) => expect(e.code).toBe(grpc.status.NOT_FOUND));
      const [e] = await history.list({});
      expect(e).toMatchObject({ kind: 'lookup', outcome: 'miss', action: digest.toString(), client: { identity: 'ci-runner' } });
    } finally {
      history.close();
      clients.close();
      await d.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('history.enabled false: nothing recorded, and the History service says how to turn it on', async () => {
    const d = await startTestDaemon((c) => {
      c.history.enabled = false;
      c.execution.enabled = false;
    });
    const history = new HistoryClient(d.address);
    try {
      expect(d.daemon.history).toBeUndefined();
      const err = await history.list({}).then(() => undefined, (e: HistoryRequestError) => e);
      expect(err).toBeInstanceOf(HistoryRequestError);
      expect(err!.message).toMatch(/the action history is off in this daemon \(history.enabled: false in its config\): set it to true and restart/);
    } finally {
      history.close();
      await d.stop();
    }
  });
});
