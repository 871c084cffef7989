import { randomInt } from 'node:crypto';
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call } from '../../src/client/reapi-client.js';
import { treeFromDirectory, type LocalTree } from '../../src/client/merkle.js';
import { defaultConfig } from '../../src/config/config.js';
import { Daemon } from '../../src/daemon/daemon.js';
import { lookupUser } from '../../src/host/users.js';
import { findBubblewrap } from '../../src/runner/bubblewrap-runner.js';
import { silentLogger } from '../../src/util/logger.js';
import { BUSYBOX, buildStreamReadOnlyRoot, makeBusyboxRoot } from '../helpers/busybox-root.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { execute, readBlob, uploadAction, uploadTree } from '../helpers/exec-client.js';
import { cannotCreateUsers, createTestUser, type TestUser } from '../helpers/other-user.js';

const missing = process.getuid?.() !== 0 ? 'the daemon must run as root' : !BUSYBOX ? 'busybox-static' : !findBubblewrap() ? 'bubblewrap' : cannotCreateUsers();

/** The host processes whose command line is exactly `argv`, with their uids (real, effective, saved, fs). */
function processesRunning(argv: string[]): Array<{ pid: number; uids: number[] }> {
  const want = argv.join('\0') + '\0';
  const out: Array<{ pid: number; uids: number[] }> = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (readFileSync(`/proc/${name}/cmdline`, 'utf8') !== want) continue;
      const uids = /^Uid:\s+(.*)$/m.exec(readFileSync(`/proc/${name}/status`, 'utf8'))![1]!.trim().split(/\s+/).map(Number);
      out.push({ pid: Number(name), uids });
    } catch {
      /* gone meanwhile */
    }
  }
  return out;
}

/**
 * Never root inside: a daemon run as root (as CI runs every test) runs each action as an
 * unprivileged user, as seen from outside the sandbox; inside, the rootfs sandbox still shows
 * uid 0 and the action owns what it may write.
 */
describe.skipIf(missing && !process.env.CI)(`actions of a daemon run as root${missing ? ` (skipped: ${missing})` : ''}`, () => {
  let d: TestDaemon;
  let root: string;
  let tree: LocalTree;
  let user: TestUser;

  beforeAll(async () => {
    if (missing) throw new Error(`this test needs ${missing}`);
    user = createTestUser();
    d = await startTestDaemon((c) => (c.execution.runAs = user.name));
    root = makeBusyboxRoot();
    tree = await treeFromDirectory(root, { directoryProperties: buildStreamReadOnlyRoot });
    await uploadTree(d.clients, tree);
  });
  afterAll(async () => {
    await d?.stop();
    user?.remove();
    if (root) rmSync(root, { recursive: true, force: true });
  });

  /** Start an action that sleeps, find its process on the host, then cancel it. */
  const uidsOfRunningAction = async (platform: Array<[string, string]>): Promise<number[]> => {
    const argv = ['sleep', String(randomInt(100_000, 900_000))];
    const action = await uploadAction(d.clients, tree.root, { args: argv, platform, doNotCache: true });
    const stream = (d.clients.execution as any).Execute({ actionDigest: action.toProto() });
    let opName = '';
    stream.on('data', (op: { name: string }) => (opName ||= op.name));
    const ended = new Promise((resolve) => {
      stream.on('error', resolve);
      stream.on('end', resolve);
    });
    const cmdline = argv;
    let found: Array<{ pid: number; uids: number[] }> = [];
    for (let i = 0; i < 3000 && found.length === 0; i++) {
      found = processesRunning(cmdline);
      if (found.length === 0) await sleep(10);
    }
    while (!opName) await sleep(10);
    await call(d.clients.operations, 'CancelOperation', { name: opName });
    await ended;
    expect(found, `no process ${cmdline.join(' ')} appeared`).toHaveLength(1);
    return found[0]!.uids;
  };

  it('the rootfs sandbox runs as the run-as user seen from outside (/proc/PID/status), never uid 0', async () => {
    expect(await uidsOfRunningAction([['OSFamily', 'linux']])).toEqual([user.uid, user.uid, user.uid, user.uid]);
  });

  it('so does the host-tools sandbox', async () => {
    expect(await uidsOfRunningAction([['OSFamily', 'linux'], ['reexec-sandbox', 'host-tools']])).toEqual([user.uid, user.uid, user.uid, user.uid]);
  });

  it('inside, the rootfs sandbox is uid 0, owns its writable tree, and writes outputs there', async () => {
    const action = await uploadAction(d.clients, tree.root, {
      args: ['sh', '-c', 'id -u; stat -c %u:%g /work; echo made > /work/out/file; ls -ln /work/out/file | cut -c1-10'],
      outputPaths: ['work/out/file'],
      doNotCache: true,
    });
    const { response, error } = await execute(d.clients, action);
    expect(error).toBeUndefined();
    expect(response!.result!.exitCode, (await readBlob(d.clients, response!.result!.stderrDigest)).toString()).toBe(0);
    expect((await readBlob(d.clients, response!.result!.stdoutDigest)).toString()).toBe('0\n0:0\n-rw-r--r--\n');
    expect(response!.result!.outputFiles!.map((f) => f.path)).toEqual(['work/out/file']);
  });

  it('refuses to start as root with run-as root, or a user that does not exist, and says how to fix it', async () => {
    for (const [runAs, why] of [
      ['root', /which is root: actions must never run as root; fix: set execution.run-as to an unprivileged user/],
      ['no-such-user-rx', /no such user on this host; fix:/],
    ] as const) {
      const config = defaultConfig();
      config.listen = ['127.0.0.1:0'];
      config.metrics.listen = null;
      config.dataDir = `${d.dataDir}-${runAs}`;
      config.execution.runAs = runAs;
      await expect(Daemon.start(config, silentLogger)).rejects.toThrow(why);
      rmSync(config.dataDir, { recursive: true, force: true });
    }
  });

  it('"auto" picks the dedicated reexec user when there is one, else nobody', async () => {
    const { resolveRunAs } = await import('../../src/host/run-as.js');
    const expected = lookupUser('reexec') ?? lookupUser('nobody');
    expect(resolveRunAs('auto', 0).user?.uid).toBe(expected!.uid);
    expect(resolveRunAs('auto', 1000).user).toBeUndefined();
  });
});
