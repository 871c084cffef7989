import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call } from '../../src/client/reapi-client.js';
import type { LocalTree } from '../../src/client/merkle.js';
import { longrunning, re } from '../../src/proto.js';
import { findBubblewrap } from '../../src/runner/bubblewrap-runner.js';
import { uploadBusyboxRoot } from '../helpers/action-batch.js';
import { BUSYBOX } from '../helpers/busybox-root.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { execute, readBlob, uploadAction } from '../helpers/exec-client.js';

const missing = !BUSYBOX ? 'busybox-static' : !findBubblewrap() ? 'bubblewrap' : undefined;

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
  beforeAll(async () => {
    ({ d, tree } = await startBusyboxDaemon(2));
  });
  afterAll(() => d?.stop());

  it('shares one execution between identical actions in flight', async () => {
    const action = await uploadAction(d.clients, tree.root, { args: ['sh', '-c', 'sleep 1; date +%s%N'] });
    const [a, b] = await Promise.all([execute(d.clients, action), execute(d.clients, action)]);
    expect(a.operations[0]!.name).toBe(b.operations[0]!.name);
    expect(a.response!.result!.stdoutDigest).toEqual(b.response!.result!.stdoutDigest);
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
    const action = await uploadAction(d.clients, tree.root, { args: ['sh', '-c', '(sleep 60; echo child) & sleep 60'], doNotCache: true });
    const t0 = Date.now();
    const { name, stream } = await firstOperation(d, action);
    const done = new Promise<longrunning.Operation[]>((resolve) => {
      const got: longrunning.Operation[] = [];
      stream.on('data', (op: longrunning.Operation) => got.push(op));
      stream.on('end', () => resolve(got));
    });
    await new Promise((r) => setTimeout(r, 500));
    await call(d.clients.operations, 'CancelOperation', { name });
    const ops = await done;
    const resp = re.ExecuteResponse.decode(ops[ops.length - 1]!.response!.value!);
    expect(resp.status!.code).toBe(1);
    expect(Date.now() - t0).toBeLessThan(20_000);
    // Nothing of the action survives on the host: not the shell, not its background child.
    const leftovers = execFileSync('ps', ['-eo', 'args'], { encoding: 'utf8' }).split('\n').filter((l) => l.trim() === 'sleep 60');
    expect(leftovers).toEqual([]);
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
    const blocker = await uploadAction(d.clients, tree.root, { args: ['sh', '-c', 'sleep 2'], doNotCache: true });
    const blocking = execute(d.clients, blocker);
    for (let i = 0; i < 200; i++) {
      const list: any = await call(d.clients.operations, 'ListOperations', { name: '', pageSize: 1000 });
      if (list.operations.some((o: longrunning.Operation) => !o.done && re.ExecuteOperationMetadata.decode(o.metadata!.value!).stage === 3)) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    const spec = (tag: string) => uploadAction(d.clients, tree.root, { args: ['sh', '-c', `echo ${tag}`], doNotCache: true });
    const [low, tieA, tieB, high] = await Promise.all([spec('low'), spec('tie-a'), spec('tie-b'), spec('high')]);
    const runs: ReturnType<typeof execute>[] = [];
    for (const [a, priority] of [[low, 10], [tieA, 0], [tieB, 0], [high, -10]] as const) {
      const queuedBefore = await queuedCount(d);
      runs.push(execute(d.clients, a, { executionPolicy: { priority } }));
      // Arrival order matters for ties: wait until this one is queued before sending the next.
      for (let i = 0; i < 100 && (await queuedCount(d)) <= queuedBefore; i++) await new Promise((r) => setTimeout(r, 20));
    }
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
