import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import type * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call } from '../../src/client/reapi-client.js';
import { treeFromDirectory } from '../../src/client/merkle.js';
import { DEFAULT_UPSTREAM, type Config } from '../../src/config/config.js';
import { Digest } from '../../src/digest/digest.js';
import { detectIsaSupport } from '../../src/execution/isa-support.js';
import { longrunning, re } from '../../src/proto.js';
import { findBubblewrap } from '../../src/runner/bubblewrap-runner.js';
import { hostIsa } from '../../src/scheduler/platform.js';
import { UPSTREAM_POOL } from '../../src/scheduler/scheduler.js';
import { makeBusyboxRoot } from '../helpers/busybox-root.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { freePort } from '../helpers/daemon-process.js';
import { execute, readBlob, uploadAction, uploadTree } from '../helpers/exec-client.js';
import { foreignBusybox, makeRootAround } from '../helpers/foreign-busybox.js';
import { waitFor } from '../helpers/wait.js';

const why = !findBubblewrap() ? 'bubblewrap is not installed' : undefined;
if (why && process.env['CI']) throw new Error(`upstream execution tests cannot run: ${why}`);

/** A workstation daemon in front of `url`, forwarding as `execute` says, with only a host-ISA pool. */
function workstation(url: string, execute: 'upstream' | 'unsupported', extra: (c: Config) => void = () => undefined): (c: Config) => void {
  return (c) => {
    c.upstream = { ...DEFAULT_UPSTREAM, url, execute, push: false, callTimeoutSeconds: 5, retry: { initialSeconds: 60, maxSeconds: 60 } };
    c.execution.pools = [{ name: 'native', isa: [hostIsa()], slots: 2 }];
    extra(c);
  };
}

/** Execute, returning the first operation's name as soon as it arrives, and the whole stream's outcome. */
function startExecute(d: TestDaemon, action: Parameters<typeof execute>[1]): { name: Promise<string>; done: ReturnType<typeof execute> } {
  let gotName: (n: string) => void = () => undefined;
  const name = new Promise<string>((r) => (gotName = r));
  const done = new Promise<Awaited<ReturnType<typeof execute>>>((resolve) => {
    const operations: longrunning.Operation[] = [];
    const stream = (d.clients.execution as any).Execute({ actionDigest: action.toProto() });
    stream.on('data', (op: longrunning.Operation) => {
      operations.push(op);
      gotName(op.name);
    });
    stream.on('error', (error: grpc.ServiceError) => resolve({ operations, error }));
    stream.on('end', () => {
      const last = operations[operations.length - 1];
      resolve({ operations, response: last?.response ? re.ExecuteResponse.decode(last.response.value!) : undefined });
    });
  });
  return { name, done };
}

describe.skipIf(why)(`execution forwarded to an upstream reexec${why ? ` (skipped: ${why})` : ''}`, () => {
  let upstream: TestDaemon;
  let ws: TestDaemon;
  let root: string;
  let url: string;

  beforeAll(async () => {
    upstream = await startTestDaemon();
    url = `grpc://${upstream.address}`;
    ws = await startTestDaemon(workstation(url, 'upstream'));
    root = makeBusyboxRoot();
  });
  afterAll(async () => {
    await ws?.stop();
    await upstream?.stop();
    rmSync(root, { recursive: true, force: true });
  });

  it('runs the action upstream and keeps its outputs (files, trees, logs) and result locally', async () => {
    const tree = await treeFromDirectory(root);
    await uploadTree(ws.clients, tree);
    const action = await uploadAction(ws.clients, tree.root, {
      args: ['sh', '-c', 'mkdir -p work/out/sub && echo deep > work/out/sub/f && echo file > work/one && echo to-stdout && echo to-stderr >&2'],
      outputPaths: ['work/one', 'work/out'],
    });
    const { response, error, operations } = await execute(ws.clients, action);
    expect(error).toBeUndefined();
    expect(response!.status?.code ?? 0).toBe(0);
    const result = response!.result!;
    expect(result.exitCode).toBe(0);
    // Everything is read from the workstation: the upstream's blobs were copied here.
    expect((await readBlob(ws.clients, result.stdoutDigest)).toString()).toBe('to-stdout\n');
    expect((await readBlob(ws.clients, result.stderrDigest)).toString()).toBe('to-stderr\n');
    expect((await readBlob(ws.clients, result.outputFiles![0]!.digest)).toString()).toBe('file\n');
    const outTree = re.Tree.decode(await readBlob(ws.clients, result.outputDirectories![0]!.treeDigest));
    const sub = outTree.children.find((c) => c.files!.some((f) => f.name === 'f'))!;
    expect((await readBlob(ws.clients, sub.files![0]!.digest)).toString()).toBe('deep\n');
    const rootDir = re.Directory.decode(await readBlob(ws.clients, result.outputDirectories![0]!.rootDirectoryDigest));
    expect(rootDir.directories.map((d) => d.name)).toEqual(['sub']);
    expect(result.executionMetadata?.worker).toContain(url);
    // Copied into the local store itself (not only readable through it from the upstream).
    const outputs = [result.stdoutDigest, result.stderrDigest, result.outputFiles![0]!.digest, result.outputDirectories![0]!.treeDigest, result.outputDirectories![0]!.rootDirectoryDigest, sub.files![0]!.digest];
    expect(outputs.filter((d) => !d?.sizeBytes || !ws.daemon.casBase.record(Digest.fromProto(d)))).toEqual([]);

    // It ran upstream: the upstream knows the operation, the workstation's local pool never had it.
    const upOps = upstream.daemon.execution!.scheduler.list().filter((op) => op.job.actionDigest.hash === action.hash);
    expect(upOps.length).toBe(1);
    const wsOp = ws.daemon.execution!.scheduler.get(operations[0]!.name);
    expect(wsOp.pool).toBe(UPSTREAM_POOL);
    expect(ws.daemon.execution!.scheduler.list().every((op) => op.pool === UPSTREAM_POOL)).toBe(true);

    // Cached locally like a local result: a second Execute is a local hit, the upstream sees nothing new.
    const again = await execute(ws.clients, action);
    expect(again.response!.cachedResult).toBe(true);
    expect(upstream.daemon.execution!.scheduler.list().filter((op) => op.job.actionDigest.hash === action.hash).length).toBe(1);
    const hit: any = await call(ws.clients.actionCache, 'GetActionResult', { actionDigest: action.toProto() });
    expect(hit.exitCode).toBe(0);

    // The action history names the upstream as the worker.
    await waitFor('the history entry of the forwarded action', async () => (await ws.daemon.history!.actions.list({}, 50)).find((e) => e.worker?.includes(url)));
  });

  it('passes a cancel through to the upstream', async () => {
    const tree = await treeFromDirectory(root);
    await uploadTree(ws.clients, tree);
    const action = await uploadAction(ws.clients, tree.root, { args: ['sleep', '3600'], doNotCache: true });
    const run = startExecute(ws, action);
    const name = await run.name;
    const upstreamOp = await waitFor('the action to run upstream', () =>
      upstream.daemon.execution!.scheduler.list().find((op) => op.job.actionDigest.hash === action.hash && op.stage === 'EXECUTING'),
    );
    await call(ws.clients.operations, 'CancelOperation', { name });
    const { response } = await run.done;
    expect(response!.status?.code).toBe(1);
    await waitFor('the upstream operation to end cancelled', () => upstreamOp.stage === 'COMPLETED' && upstreamOp.response?.status?.code === 1);
  });

  it('passes a cancel through even when it comes before the upstream has named its operation', async () => {
    const tree = await treeFromDirectory(root);
    await uploadTree(ws.clients, tree);
    const action = await uploadAction(ws.clients, tree.root, { args: ['sleep', '3601'], doNotCache: true });
    const run = startExecute(ws, action);
    const name = await run.name;
    // From now on, operations wait before their journal write (both daemons are in this
    // process): the upstream runs the action but has not named it to the forwarder yet.
    const pauseFile = join(mkdtempSync(join(tmpdir(), 'reexec-fwd-cancel-')), 'pause');
    writeFileSync(pauseFile, '');
    process.env.REEXEC_TEST_PAUSE_AT = 'operation-journal-write';
    process.env.REEXEC_TEST_PAUSE_FILE = pauseFile;
    try {
      const upstreamOp = await waitFor('the action to run upstream', () =>
        upstream.daemon.execution!.scheduler.list().find((op) => op.job.actionDigest.hash === action.hash && op.stage === 'EXECUTING'),
      );
      await call(ws.clients.operations, 'CancelOperation', { name });
      rmSync(pauseFile);
      const { response } = await run.done;
      expect(response!.status?.code).toBe(1);
      await waitFor('the upstream operation to end cancelled', () => upstreamOp.stage === 'COMPLETED' && upstreamOp.response?.status?.code === 1);
    } finally {
      delete process.env.REEXEC_TEST_PAUSE_AT;
      delete process.env.REEXEC_TEST_PAUSE_FILE;
      rmSync(dirname(pauseFile), { recursive: true, force: true });
    }
  });

  it('shows forwarded actions in status and Prometheus under the pool "upstream"', async () => {
    const res: any = await call(ws.clients.admin, 'GetStatus', {});
    const pools = res.execution.pools as Array<{ name: string; upstream?: string }>;
    expect(pools.find((p) => p.name === UPSTREAM_POOL)?.upstream).toBe(url);
    const metrics = await ws.daemon.telemetry.registry.metrics();
    expect(metrics).toMatch(/reexec_actions_executed_total\{pool="upstream",outcome="success"\} [1-9]/);
    expect(metrics).toContain('reexec_running_actions{pool="upstream"} 0');
  });
});

describe.skipIf(why)(`execute: unsupported${why ? ` (skipped: ${why})` : ''}`, () => {
  const roots: string[] = [];
  afterAll(() => {
    for (const r of roots) rmSync(r, { recursive: true, force: true });
  });

  it('an upstream that is down: forwarded actions fail UNAVAILABLE naming it, local ones still run', async () => {
    const url = `grpc://127.0.0.1:${await freePort()}`;
    const ws = await startTestDaemon(workstation(url, 'unsupported'));
    try {
      const root = makeBusyboxRoot();
      roots.push(root);
      const tree = await treeFromDirectory(root);
      await uploadTree(ws.clients, tree);
      // An ISA no local pool offers goes upstream, which is not there.
      const foreign = await uploadAction(ws.clients, tree.root, { args: ['true'], platform: [['ISA', 'aarch64'], ['OSFamily', 'linux']] });
      const f = await execute(ws.clients, foreign);
      expect(f.error).toBeUndefined();
      expect(f.response!.status?.code).toBe(14);
      expect(f.response!.status?.message).toContain(url);
      // A host-ISA action runs here as ever.
      const local = await uploadAction(ws.clients, tree.root, { args: ['sh', '-c', 'echo local'] });
      const l = await execute(ws.clients, local);
      expect(l.response!.result!.exitCode).toBe(0);
      expect((await readBlob(ws.clients, l.response!.result!.stdoutDigest)).toString()).toBe('local\n');
    } finally {
      await ws.stop();
    }
  });

  it('runs an aarch64 action upstream when no local pool offers aarch64', async () => {
    const support = await detectIsaSupport({ bubblewrapOk: true });
    const arm = support.find((s) => s.isa === 'aarch64');
    if (!arm?.ok) throw new Error(`the upstream cannot emulate aarch64 here: ${arm?.detail}; run \`reexec init --setup-binfmt\` as root`);
    const bb = foreignBusybox('arm64');
    if (!bb.path) throw new Error(`cannot get busybox-static:arm64: ${bb.why}`);
    const upstream = await startTestDaemon();
    const ws = await startTestDaemon(workstation(`grpc://${upstream.address}`, 'unsupported'));
    try {
      const root = makeRootAround(bb.path);
      roots.push(root);
      const tree = await treeFromDirectory(root);
      await uploadTree(ws.clients, tree);
      const action = await uploadAction(ws.clients, tree.root, { args: ['uname', '-m'], platform: [['ISA', 'aarch64'], ['OSFamily', 'linux']] });
      const { response, error } = await execute(ws.clients, action);
      expect(error).toBeUndefined();
      expect(response!.result!.exitCode).toBe(0);
      expect((await readBlob(ws.clients, response!.result!.stdoutDigest)).toString()).toBe('aarch64\n');
      expect(upstream.daemon.execution!.scheduler.list().some((op) => op.job.actionDigest.hash === action.hash)).toBe(true);
    } finally {
      await ws.stop();
      await upstream.stop();
    }
  });
});
