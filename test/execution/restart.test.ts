import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { call } from '../../src/client/reapi-client.js';
import { treeFromDirectory } from '../../src/client/merkle.js';
import { longrunning, re } from '../../src/proto.js';
import { findBubblewrap } from '../../src/runner/bubblewrap-runner.js';
import { BUSYBOX, makeBusyboxRoot } from '../helpers/busybox-root.js';
import { startTestDaemon } from '../helpers/daemon.js';
import { Gate } from '../helpers/gate.js';
import { readBlob, uploadAction, uploadTree } from '../helpers/exec-client.js';
import { waitFor } from '../helpers/wait.js';

const missing = !BUSYBOX ? 'busybox-static' : !findBubblewrap() ? 'bubblewrap' : undefined;

describe.skipIf(missing)('the queue survives a daemon restart', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'reexec-restart-'));
  const hostRoot = BUSYBOX ? makeBusyboxRoot() : '';
  afterAll(() => {
    rmSync(dataDir, { recursive: true, force: true });
    if (hostRoot) rmSync(hostRoot, { recursive: true, force: true });
  });

  it('runs queued and interrupted operations after a restart, under their old names', async () => {
    const oneSlot = (c: any): void => {
      c.execution.pools = [{ name: 'native', isa: ['x86-64'], slots: 1 }];
    };
    const first = await startTestDaemon(oneSlot, dataDir);
    const tree = await treeFromDirectory(hostRoot);
    await uploadTree(first.clients, tree);
    const running = await uploadAction(first.clients, tree.root, { args: ['sh', '-c', 'sleep 2; echo interrupted-one'] });
    const queued = await uploadAction(first.clients, tree.root, { args: ['sh', '-c', 'echo queued-one'] });
    const names: string[] = [];
    for (const a of [running, queued]) {
      names.push(
        await new Promise<string>((resolve, reject) => {
          const s = (first.clients.execution as any).Execute({ actionDigest: a.toProto() });
          s.once('data', (op: longrunning.Operation) => resolve(op.name));
          s.on('error', () => undefined);
          s.once('error', reject);
        }),
      );
    }
    // Stop while the first runs (interrupted) and the second waits.
    await waitFor('the first action to run', async () => {
      const op: any = await call(first.clients.operations, 'GetOperation', { name: names[0] });
      return op.done || re.ExecuteOperationMetadata.decode(op.metadata.value).stage >= 3;
    });
    await first.stop();

    const second = await startTestDaemon(oneSlot, dataDir);
    try {
      for (const [i, name] of names.entries()) {
        const ops: longrunning.Operation[] = await new Promise((resolve, reject) => {
          const got: longrunning.Operation[] = [];
          const s = (second.clients.execution as any).WaitExecution({ name });
          s.on('data', (op: longrunning.Operation) => got.push(op));
          s.on('end', () => resolve(got));
          s.on('error', reject);
        });
        const resp = re.ExecuteResponse.decode(ops[ops.length - 1]!.response!.value!);
        expect(resp.status?.code ?? 0).toBe(0);
        expect((await readBlob(second.clients, resp.result!.stdoutDigest)).toString()).toBe(i === 0 ? 'interrupted-one\n' : 'queued-one\n');
      }
    } finally {
      await second.stop();
    }
  });

  it('keeps operations that shared an execution sharing it after a restart, each under its name', async () => {
    const oneSlot = (c: any): void => {
      c.execution.pools = [{ name: 'native', isa: ['x86-64'], slots: 1 }];
    };
    const gate = await Gate.start();
    const dir = mkdtempSync(join(tmpdir(), 'reexec-restart-shared-'));
    const first = await startTestDaemon(oneSlot, dir);
    let second: Awaited<ReturnType<typeof startTestDaemon>> | undefined;
    try {
      const tree = await treeFromDirectory(hostRoot);
      await uploadTree(first.clients, tree);
      // The one slot is held at the gate; two clients' identical action waits in the queue.
      const blocker = await uploadAction(first.clients, tree.root, { args: ['sh', '-c', gate.wait('blocker')], platform: [['OSFamily', 'linux'], ['network', 'on']], doNotCache: true });
      const shared = await uploadAction(first.clients, tree.root, { args: ['sh', '-c', 'cat /proc/sys/kernel/random/uuid'] });
      const firstName = (a: typeof shared): Promise<string> =>
        new Promise<string>((resolve, reject) => {
          const s = (first.clients.execution as any).Execute({ actionDigest: a.toProto() });
          s.once('data', (op: longrunning.Operation) => resolve(op.name));
          s.on('error', () => undefined);
          s.once('error', reject);
        });
      await firstName(blocker);
      await gate.arrived(1, 'blocker');
      const names = [await firstName(shared), await firstName(shared)];
      expect(names[0]).not.toBe(names[1]);
      await first.stop();
      gate.open();

      second = await startTestDaemon(oneSlot, dir);
      const outputs: string[] = [];
      for (const name of names) {
        const ops: longrunning.Operation[] = await new Promise((resolve, reject) => {
          const got: longrunning.Operation[] = [];
          const s = (second!.clients.execution as any).WaitExecution({ name });
          s.on('data', (op: longrunning.Operation) => got.push(op));
          s.on('end', () => resolve(got));
          s.on('error', reject);
        });
        const resp = re.ExecuteResponse.decode(ops[ops.length - 1]!.response!.value!);
        expect(resp.status?.code ?? 0).toBe(0);
        outputs.push((await readBlob(second.clients, resp.result!.stdoutDigest)).toString());
      }
      // One run after the restart, for both.
      expect(outputs[0]).toMatch(/^[0-9a-f-]{36}\n$/);
      expect(outputs[1]).toBe(outputs[0]);
    } finally {
      await second?.stop();
      await gate.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
