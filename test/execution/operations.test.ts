import { execFileSync } from 'node:child_process';
import type * as grpc from '@grpc/grpc-js';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { call } from '../../src/client/reapi-client.js';
import type { LocalTree } from '../../src/client/merkle.js';
import { longrunning, re } from '../../src/proto.js';
import { findBubblewrap } from '../../src/runner/bubblewrap-runner.js';
import { uploadBusyboxRoot } from '../helpers/action-batch.js';
import { BUSYBOX } from '../helpers/busybox-root.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { Gate } from '../helpers/gate.js';
import { execute, readBlob, uploadAction } from '../helpers/exec-client.js';
import { waitFor } from '../helpers/wait.js';

const missing = !BUSYBOX ? 'busybox-static' : !findBubblewrap() ? 'bubblewrap' : undefined;
/** Actions that wait at a Gate reach it over the loopback. */
const NETWORK: Array<[string, string]> = [['OSFamily', 'linux'], ['network', 'on']];

function firstOperation(d: TestDaemon, action: ReturnType<typeof uploadAction> extends Promise<infer T> ? T : never): Promise<{ name: string; stream: any }> {
  return new Promise((resolve, reject) => {
    const stream = (d.clients.execution as any).Execute({ actionDigest: action.toProto() });
    stream.once('data', (op: longrunning.Operation) => resolve({ name: op.name, stream }));
    stream.once('error', reject);
  });
}

/**
 * A test daemon with one native pool of `slots`, and a busybox input root uploaded to it;
 * stop() also removes the root.
 */
async function startBusyboxDaemon(slots: number): Promise<{ d: TestDaemon; tree: LocalTree }> {
  const d = await startTestDaemon((c) => {
    c.execution.pools = [{ name: 'native', isa: ['x86-64'], slots }];
  });
  const { tree, hostRoot } = await uploadBusyboxRoot(d.clients).catch(async (err: unknown) => {
    await d.stop();
    throw err;
  });
  const stop = async () => {
    await d.stop();
    rmSync(hostRoot, { recursive: true, force: true });
  };
  return { d: { ...d, stop }, tree };
}

describe.skipIf(missing)(`Operations${missing ? ` (skipped: apt-get install ${missing})` : ''}`, () => {
  let d: TestDaemon;
  let tree: LocalTree;
  let gate: Gate;
  beforeAll(async () => {
    ({ d, tree } = await startBusyboxDaemon(2));
    gate = await Gate.start();
  });
  afterAll(async () => {
    await gate?.close();
    await d?.stop();
  });

  it('gives each Execute its own operation, and identical actions in flight one execution', async () => {
    const action = await uploadAction(d.clients, tree.root, { args: ['sh', '-c', `${gate.wait('shared-run')}; cat /proc/sys/kernel/random/uuid`], platform: NETWORK });
    const a = execute(d.clients, action);
    const b = execute(d.clients, action);
    await gate.arrived(1, 'shared-run');
    gate.open();
    const [ra, rb] = await Promise.all([a, b]);
    expect(ra.operations[0]!.name).not.toBe(rb.operations[0]!.name);
    // One run: the same random output for both, and only one arrival at the gate.
    expect(ra.response!.result!.stdoutDigest).toEqual(rb.response!.result!.stdoutDigest);
    expect(gate.arrivals.filter((x) => x === 'shared-run')).toHaveLength(1);
  });

  it('reattaches with WaitExecution and answers GetOperation and ListOperations', async () => {
    const action = await uploadAction(d.clients, tree.root, { args: ['sh', '-c', 'sleep 1; echo waited'] });
    const { name, stream } = await firstOperation(d, action);
    stream.cancel();
    const ops: longrunning.Operation[] = await new Promise((resolve, reject) => {
      const got: longrunning.Operation[] = [];
      const s = (d.clients.execution as any).WaitExecution({ name });
      s.on('data', (op: longrunning.Operation) => got.push(op));
      s.on('end', () => resolve(got));
      s.on('error', reject);
    });
    const last = ops[ops.length - 1]!;
    expect(last.done).toBe(true);
    const resp = re.ExecuteResponse.decode(last.response!.value!);
    expect((await readBlob(d.clients, resp.result!.stdoutDigest)).toString()).toBe('waited\n');
    const got: any = await call(d.clients.operations, 'GetOperation', { name });
    expect(got.done).toBe(true);
    const list: any = await call(d.clients.operations, 'ListOperations', { name: '', pageSize: 1000 });
    expect(list.operations.map((o: any) => o.name)).toContain(name);
    await expect(call(d.clients.operations, 'GetOperation', { name: 'operations/nope' })).rejects.toMatchObject({ code: 5, details: expect.stringContaining('operations/nope') });
  });

  it('CancelOperation kills the whole process tree of a running action', async () => {
    // A duration of its own, so that other test runs on the machine cannot be mistaken for it.
    const secs = 3600 + Math.floor(Math.random() * 100_000);
    const action = await uploadAction(d.clients, tree.root, { args: ['sh', '-c', `(sleep ${secs}; echo child) & sleep ${secs}`], doNotCache: true });
    const sleeping = (): string[] => execFileSync('ps', ['-eo', 'args'], { encoding: 'utf8' }).split('\n').filter((l) => l.trim() === `sleep ${secs}`);
    const { name, stream } = await firstOperation(d, action);
    const done = new Promise<longrunning.Operation[]>((resolve) => {
      const got: longrunning.Operation[] = [];
      stream.on('data', (op: longrunning.Operation) => got.push(op));
      stream.on('end', () => resolve(got));
    });
    // Cancel once the whole tree runs: the shell's sleep and its background child's.
    await waitFor('the action and its child to be running', () => sleeping().length >= 2);
    await call(d.clients.operations, 'CancelOperation', { name });
    const ops = await done;
    const resp = re.ExecuteResponse.decode(ops[ops.length - 1]!.response!.value!);
    expect(resp.status!.code).toBe(1);
    expect(resp.result?.exitCode ?? null).not.toBe(0);
    // Nothing of the action survives on the host: not the shell, not its background child.
    expect(sleeping()).toEqual([]);
  });

  it('CancelOperation while the inputs are being staged stops the action before it runs on', async () => {
    const pause = join(mkdtempSync(join(tmpdir(), 'reexec-pause-')), 'staged');
    writeFileSync(pause, '');
    process.env['REEXEC_TEST_PAUSE_AT'] = 'staged';
    process.env['REEXEC_TEST_PAUSE_FILE'] = pause;
    try {
      const action = await uploadAction(d.clients, tree.root, { args: ['sh', '-c', 'sleep 600'], doNotCache: true });
      const { name, stream } = await firstOperation(d, action);
      const done = new Promise<longrunning.Operation[]>((resolve) => {
        const got: longrunning.Operation[] = [];
        stream.on('data', (op: longrunning.Operation) => got.push(op));
        stream.on('end', () => resolve(got));
      });
      // Staged, not yet started: cancel now, then let it go on.
      await waitFor('the action to be staged', () => existsSync(`${pause}.reached`));
      await call(d.clients.operations, 'CancelOperation', { name });
      rmSync(pause);
      const ops = await done;
      expect(re.ExecuteResponse.decode(ops[ops.length - 1]!.response!.value!).status!.code).toBe(1);
    } finally {
      delete process.env['REEXEC_TEST_PAUSE_AT'];
      delete process.env['REEXEC_TEST_PAUSE_FILE'];
      rmSync(pause, { force: true });
    }
  });
});


async function queuedCount(d: TestDaemon): Promise<number> {
  const list: any = await call(d.clients.operations, 'ListOperations', { name: '', pageSize: 1000 });
  return list.operations.filter((o: longrunning.Operation) => !o.done && re.ExecuteOperationMetadata.decode(o.metadata!.value!).stage === 2).length;
}

describe.skipIf(missing)('priorities', () => {
  let d: TestDaemon;
  let tree: LocalTree;
  // One slot: the order in which queued work runs is decided by the queue alone.
  beforeAll(async () => {
    ({ d, tree } = await startBusyboxDaemon(1));
  });
  afterAll(() => d?.stop());

  it('runs queued work in priority order (lower value first), ties in arrival order', async () => {
    // The blocker holds the one slot until cancelled, once all four wait: however slow the
    // machine, none of them can start early.
    const blocker = await uploadAction(d.clients, tree.root, { args: ['sh', '-c', 'sleep 600'], doNotCache: true });
    const blocking = execute(d.clients, blocker);
    const blockerName = await waitFor('the blocker to run', async () => {
      const list: any = await call(d.clients.operations, 'ListOperations', { name: '', pageSize: 1000 });
      return list.operations.find((o: longrunning.Operation) => !o.done && re.ExecuteOperationMetadata.decode(o.metadata!.value!).stage === 3)?.name as string | undefined;
    });
    const spec = (tag: string) => uploadAction(d.clients, tree.root, { args: ['sh', '-c', `echo ${tag}`], doNotCache: true });
    const [low, tieA, tieB, high] = await Promise.all([spec('low'), spec('tie-a'), spec('tie-b'), spec('high')]);
    const runs: ReturnType<typeof execute>[] = [];
    for (const [a, priority] of [[low, 10], [tieA, 0], [tieB, 0], [high, -10]] as const) {
      const queuedBefore = await queuedCount(d);
      runs.push(execute(d.clients, a, { executionPolicy: { priority } }));
      // Arrival order matters for ties: wait until this one is queued before sending the next.
      await waitFor('this one to be queued', async () => (await queuedCount(d)) > queuedBefore);
    }
    await call(d.clients.operations, 'CancelOperation', { name: blockerName });
    const [l, ta, tb, h] = await Promise.all(runs);
    await blocking;
    const started = (r: Awaited<(typeof runs)[number]>): number => {
      const t = r.response!.result!.executionMetadata!.workerStartTimestamp!;
      return Number(t.seconds) * 1e9 + Number(t.nanos);
    };
    const order = [['high', h], ['tie-a', ta], ['tie-b', tb], ['low', l]].sort((x, y) => started(x[1] as any) - started(y[1] as any)).map((x) => x[0]);
    expect(order).toEqual(['high', 'tie-a', 'tie-b', 'low']);
  });
});

/** Every message of a WaitExecution stream. */
function waitExecution(d: TestDaemon, name: string): Promise<{ operations: longrunning.Operation[]; error?: grpc.ServiceError }> {
  return new Promise((resolve) => {
    const got: longrunning.Operation[] = [];
    const s = (d.clients.execution as any).WaitExecution({ name });
    s.on('data', (op: longrunning.Operation) => got.push(op));
    s.on('end', () => resolve({ operations: got }));
    s.on('error', (error: grpc.ServiceError) => resolve({ operations: got, error }));
  });
}

const responseOf = (ops: longrunning.Operation[]): re.ExecuteResponse => re.ExecuteResponse.decode(ops[ops.length - 1]!.response!.value!);
const stageOf = (op: any): number => re.ExecuteOperationMetadata.decode(op.metadata.value).stage;

describe.skipIf(missing)('operations of several clients on one execution', () => {
  let d: TestDaemon;
  let tree: LocalTree;
  // A fresh, shut gate for each test.
  let gate: Gate;
  beforeAll(async () => {
    ({ d, tree } = await startBusyboxDaemon(2));
  });
  beforeEach(async () => {
    gate = await Gate.start();
  });
  afterEach(() => gate?.close());
  afterAll(() => d?.stop());

  /** Two clients Execute the same action, which waits at the gate under `tag`; resolves once it runs. */
  async function twoClients(tag: string) {
    const action = await uploadAction(d.clients, tree.root, { args: ['sh', '-c', `${gate.wait(tag)}; echo ${tag}; cat /proc/sys/kernel/random/uuid`], platform: NETWORK });
    const first = await firstOperation(d, action);
    const second = await firstOperation(d, action);
    const collect = (stream: any): Promise<longrunning.Operation[]> =>
      new Promise((resolve) => {
        const got: longrunning.Operation[] = [];
        stream.on('data', (op: longrunning.Operation) => got.push(op));
        stream.on('end', () => resolve(got));
        stream.on('error', () => resolve(got));
      });
    const streams = [collect(first.stream), collect(second.stream)];
    await gate.arrived(1, tag);
    return { action, names: [first.name, second.name], streams };
  }

  it('each name answers GetOperation, WaitExecution and ListOperations', async () => {
    const { names, streams } = await twoClients('names');
    expect(names[0]).not.toBe(names[1]);
    for (const name of names) {
      const got: any = await call(d.clients.operations, 'GetOperation', { name });
      expect(got.name).toBe(name);
      expect(got.done).toBe(false);
      expect(stageOf(got)).toBe(3); // EXECUTING
    }
    const list: any = await call(d.clients.operations, 'ListOperations', { name: '', pageSize: 1000 });
    expect(list.operations.map((o: any) => o.name)).toEqual(expect.arrayContaining(names));
    const waiting = names.map((n) => waitExecution(d, n));
    gate.open();
    for (const w of [...waiting.map(async (x) => (await x).operations), ...streams]) {
      const resp = responseOf(await w);
      expect(resp.status?.code ?? 0).toBe(0);
      expect((await readBlob(d.clients, resp.result!.stdoutDigest)).toString()).toMatch(/^names\n/);
    }
  });

  it("one client's CancelOperation ends its own operation; the other client's build goes on", async () => {
    const { names, streams } = await twoClients('cancel-one');
    await call(d.clients.operations, 'CancelOperation', { name: names[0] });
    const cancelled = responseOf(await streams[0]!);
    expect(cancelled.status?.code).toBe(1); // CANCELLED
    const other: any = await call(d.clients.operations, 'GetOperation', { name: names[1] });
    expect(other.done).toBe(false);
    gate.open();
    const finished = responseOf(await streams[1]!);
    expect(finished.status?.code ?? 0).toBe(0);
    expect(finished.result!.exitCode).toBe(0);
    expect((await readBlob(d.clients, finished.result!.stdoutDigest)).toString()).toMatch(/^cancel-one\n/);
    expect(gate.arrivals.filter((x) => x === 'cancel-one')).toHaveLength(1);
    // The cancelled operation keeps its own answer.
    const again: any = await call(d.clients.operations, 'GetOperation', { name: names[0] });
    expect(re.ExecuteResponse.decode(again.response.value).status?.code).toBe(1);
  });

  it('DeleteOperation forgets one name and cancels nothing: the other client gets its result', async () => {
    const { names, streams } = await twoClients('delete-one');
    await call(d.clients.operations, 'DeleteOperation', { name: names[0] });
    await expect(call(d.clients.operations, 'GetOperation', { name: names[0] })).rejects.toMatchObject({ code: 5 });
    expect((await waitExecution(d, names[0]!)).error?.code).toBe(5);
    gate.open();
    const finished = responseOf(await streams[1]!);
    expect(finished.result!.exitCode).toBe(0);
    expect((await readBlob(d.clients, finished.result!.stdoutDigest)).toString()).toMatch(/^delete-one\n/);
  });

  it('deleting the only operation of a running action lets it finish into the action cache', async () => {
    const action = await uploadAction(d.clients, tree.root, { args: ['sh', '-c', `${gate.wait('orphan')}; echo orphan`], platform: NETWORK });
    const { name, stream } = await firstOperation(d, action);
    stream.on('error', () => undefined);
    await gate.arrived(1, 'orphan');
    await call(d.clients.operations, 'DeleteOperation', { name });
    // A client that comes later waits on the same, still running, execution.
    const later = execute(d.clients, action);
    gate.open();
    const { response } = await later;
    expect(response!.result!.exitCode).toBe(0);
    expect(gate.arrivals.filter((x) => x === 'orphan')).toHaveLength(1);
    const cached: any = await call(d.clients.actionCache, 'GetActionResult', { actionDigest: action.toProto() });
    expect(cached.stdoutDigest.hash).toBe(response!.result!.stdoutDigest!.hash);
  });
});

describe.skipIf(missing)('ListOperations', () => {
  let d: TestDaemon;
  let tree: LocalTree;
  const names: Record<string, string> = {};
  beforeAll(async () => {
    ({ d, tree } = await startBusyboxDaemon(2));
    for (const instance of ['', 'team-a']) {
      const action = await uploadAction(d.clients, tree.root, { args: ['sh', '-c', `echo ${instance || 'default'}`] });
      const { response, operations } = await execute(d.clients, action, { instanceName: instance });
      expect(response?.result?.exitCode).toBe(0);
      names[instance] = operations[0]!.name;
    }
  });
  afterAll(() => d?.stop());

  const list = async (req: Record<string, unknown>): Promise<string[]> => {
    const res: any = await call(d.clients.operations, 'ListOperations', { pageSize: 1000, ...req });
    return res.operations.map((o: any) => o.name);
  };

  it('lists the operations of the instance its name gives, or all with an empty name', async () => {
    expect(names['team-a']).toMatch(/^team-a\/operations\//);
    expect(names['']).toMatch(/^operations\//);
    expect(await list({ name: '' })).toEqual(expect.arrayContaining([names[''], names['team-a']]));
    expect(await list({ name: 'team-a' })).toEqual([names['team-a']]);
    expect(await list({ name: 'team-a/operations' })).toEqual([names['team-a']]);
    expect(await list({ name: 'operations' })).toEqual([names['']]);
    expect(await list({ name: 'team-b' })).toEqual([]);
    await expect(list({ name: 'a//b' })).rejects.toMatchObject({ code: 3 });
  });

  it('filters on done and stage, and refuses filters it does not implement, naming them', async () => {
    expect(await list({ name: 'team-a', filter: 'done = true' })).toEqual([names['team-a']]);
    expect(await list({ name: 'team-a', filter: 'done=false' })).toEqual([]);
    expect(await list({ name: 'team-a', filter: 'stage = COMPLETED AND done != false' })).toEqual([names['team-a']]);
    for (const filter of ['metadata.stage = 2', 'done = maybe', 'name:"x"']) {
      await expect(list({ name: '', filter })).rejects.toMatchObject({ code: 3, details: expect.stringContaining(filter) });
    }
  });
});
