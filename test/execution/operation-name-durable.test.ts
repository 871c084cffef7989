import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { call, connect } from '../../src/client/reapi-client.js';
import { treeFromDirectory } from '../../src/client/merkle.js';
import type { longrunning } from '../../src/proto.js';
import { findBubblewrap } from '../../src/runner/bubblewrap-runner.js';
import { BUSYBOX, makeBusyboxRoot } from '../helpers/busybox-root.js';
import { openForRunAs, startDaemonProcess, type DaemonProcess } from '../helpers/daemon-process.js';
import { uploadAction, uploadTree } from '../helpers/exec-client.js';
import { waitFor } from '../helpers/wait.js';

const missing = !BUSYBOX ? 'busybox-static' : !findBubblewrap() ? 'bubblewrap' : undefined;
if (missing && process.env.CI === 'true') throw new Error(`operation-name-durable needs ${missing}`);

/**
 * A client that has an operation's name must be able to WaitExecution on it after the daemon
 * crashed: the name is handed out only once the operation journal holds it. The daemon is
 * held at a pause point just before the journal write and killed there; whatever name the
 * client got must be known after the restart.
 */
describe.skipIf(missing)('an operation name a client has survives a crash', () => {
  const scratch = mkdtempSync(join(tmpdir(), 'reexec-opname-'));
  const dataDir = join(scratch, 'data');
  const pauseFile = join(scratch, 'pause');
  const hostRoot = BUSYBOX ? makeBusyboxRoot() : '';
  const started: DaemonProcess[] = [];
  afterAll(async () => {
    for (const d of started) if (d.running()) await d.kill();
    rmSync(scratch, { recursive: true, force: true });
    if (hostRoot) rmSync(hostRoot, { recursive: true, force: true });
  });

  it('sends no name before the journal holds it, and a name sent is found after SIGKILL', async () => {
    openForRunAs(scratch);
    const env = { REEXEC_TEST_PAUSE_AT: 'operation-journal-write', REEXEC_TEST_PAUSE_FILE: pauseFile };
    const first = await startDaemonProcess({ dataDir, env });
    started.push(first);
    const clients = connect(first.address);
    const tree = await treeFromDirectory(hostRoot);
    await uploadTree(clients, tree);

    // 1. Held before the journal write: the Execute stream must not have named the operation.
    const held = await uploadAction(clients, tree.root, { args: ['sh', '-c', 'echo held'] });
    writeFileSync(pauseFile, '');
    const heldNames: string[] = [];
    const s1 = (clients.execution as any).Execute({ actionDigest: held.toProto(), skipCacheLookup: true });
    s1.on('data', (op: longrunning.Operation) => heldNames.push(op.name));
    s1.on('error', () => undefined);
    await waitFor('the daemon to reach the journal write', () => existsSync(`${pauseFile}.reached`));
    // The operation exists (ListOperations on the same connection: answered after anything the
    // Execute stream had been sent before it), but the stream has not named it.
    const listed: longrunning.ListOperationsResponse = await call(clients.operations, 'ListOperations', { name: '', filter: '' });
    expect(listed.operations.length).toBe(1);
    expect(heldNames).toEqual([]);

    // 2. Let it go on: the name arrives once the record is written; then crash.
    rmSync(pauseFile);
    await waitFor('the operation name', () => heldNames.length > 0);
    await first.kill();
    clients.close();

    const second = await startDaemonProcess({ dataDir });
    started.push(second);
    const c2 = connect(second.address);
    try {
      const ops: longrunning.Operation[] = await new Promise((resolve, reject) => {
        const got: longrunning.Operation[] = [];
        const s = (c2.execution as any).WaitExecution({ name: heldNames[0] });
        s.on('data', (op: longrunning.Operation) => got.push(op));
        s.on('end', () => resolve(got));
        s.on('error', reject);
      });
      expect(ops.at(-1)?.done).toBe(true);
      expect(ops.at(-1)?.name).toBe(heldNames[0]);
    } finally {
      c2.close();
      await second.stop();
    }
  });
});
