import { createConnection } from 'node:net';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '../../src/client/reapi-client.js';
import { treeFromDirectory } from '../../src/client/merkle.js';
import { DEFAULT_UPSTREAM, type Config } from '../../src/config/config.js';
import { re } from '../../src/proto.js';
import { hostIsa } from '../../src/scheduler/platform.js';
import { createNetNs, spawnInRoot, type NetNs } from '../helpers/bots.js';
import { makeBusyboxRoot } from '../helpers/busybox-root.js';
import { makeClientsWork, prepareClientsRoot } from '../helpers/clients-root.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { freePort, startDaemonProcess, type DaemonProcess } from '../helpers/daemon-process.js';
import { execute, readBlob, uploadAction, uploadTree } from '../helpers/exec-client.js';
import { foreignBusybox, makeRootAround } from '../helpers/foreign-busybox.js';
import { call } from '../helpers/storage.js';
import { isExecutable, removeTree } from '../helpers/run-client.js';
import { waitFor } from '../helpers/wait.js';

/**
 * A workstation reexec in front of an upstream on another host (its own network namespace,
 * reached over a veth pair): another reexec (with an aarch64 QEMU pool) and buildbox-casd in
 * server mode from the clients root (Execution through buildbox-run-bubblewrap).
 */
const clientsRoot = isExecutable('/usr/bin/bwrap') ? prepareClientsRoot() : { skip: 'install the Debian package bubblewrap' };
const noIp = !process.env.CI && !isExecutable('/usr/sbin/ip') && !isExecutable('/sbin/ip') && !isExecutable('/usr/bin/ip');
const skip = clientsRoot.skip ?? (noIp ? 'install iproute2' : undefined);

function workstation(url: string, execute: 'upstream' | 'unsupported', tokenFile: string | null = null): (c: Config) => void {
  return (c) => {
    c.upstream = { ...DEFAULT_UPSTREAM, url, execute, tokenFile, push: false, callTimeoutSeconds: 5, retry: { initialSeconds: 60, maxSeconds: 60 } };
    c.execution.pools = [{ name: 'native', isa: [hostIsa()], slots: 2 }];
  };
}

/** Operations an upstream reexec knows, with their action digests and stages. */
async function upstreamOperations(address: string, token: string): Promise<Array<{ name: string; hash: string; stage: number; done: boolean }>> {
  const clients = connect(address, {}, { token });
  try {
    const res: any = await call(clients.operations, 'ListOperations', { name: '', filter: '', pageSize: 1000 });
    return (res.operations ?? []).map((op: any) => {
      const meta = re.ExecuteOperationMetadata.decode(op.metadata.value);
      return { name: op.name, hash: meta.actionDigest?.hash ?? '', stage: meta.stage, done: !!op.done };
    });
  } finally {
    clients.close();
  }
}

const portOpen = (host: string, port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const s = createConnection({ host, port }, () => {
      s.destroy();
      resolve(true);
    });
    s.on('error', () => resolve(false));
  });

describe.skipIf(!!skip)(`execution forwarded to an upstream on another host${skip ? ` (skipped: ${skip})` : ''}`, () => {
  const roots: string[] = [];
  afterAll(() => {
    for (const r of roots) rmSync(r, { recursive: true, force: true });
  });

  describe('another reexec in its own network namespace, execute: unsupported', () => {
    let ns: NetNs;
    let upstream: DaemonProcess;
    let ws: TestDaemon;
    let url: string;
    let dir: string;
    beforeAll(async () => {
      ns = createNetNs();
      // The workstation is another host to the upstream: it is admitted with a token.
      dir = mkdtempSync(join(tmpdir(), 'reexec-upstream-'));
      const token = randomBytes(12).toString('hex');
      writeFileSync(join(dir, 'tokens.yaml'), `${token}: read, write, execute\n`, { mode: 0o600 });
      writeFileSync(join(dir, 'token'), `${token}\n`, { mode: 0o600 });
      writeFileSync(join(dir, 'config.yaml'), `auth:\n  token-file: ${join(dir, 'tokens.yaml')}\nmetrics:\n  listen: off\n`);
      const port = await freePort();
      upstream = await startDaemonProcess({ netns: ns.name, listen: [`${ns.nsAddress}:${port}`], args: ['--config', join(dir, 'config.yaml')] });
      url = `grpc://${ns.nsAddress}:${port}`;
      ws = await startTestDaemon(workstation(url, 'unsupported', join(dir, 'token')));
    }, 120_000);
    afterAll(async () => {
      await ws?.stop();
      await upstream?.stop();
      ns?.remove();
      if (dir) rmSync(dir, { recursive: true, force: true });
    }, 60_000);

    const armRoot = async (): Promise<Awaited<ReturnType<typeof treeFromDirectory>>> => {
      const bb = foreignBusybox('arm64');
      if (!bb.path) throw new Error(`cannot get busybox-static:arm64: ${bb.why}`);
      const root = makeRootAround(bb.path);
      roots.push(root);
      const tree = await treeFromDirectory(root);
      await uploadTree(ws.clients, tree);
      return tree;
    };

    it('an aarch64 action (no local pool offers aarch64) runs on the upstream, its output read here', async () => {
      const tree = await armRoot();
      const action = await uploadAction(ws.clients, tree.root, { args: ['sh', '-c', 'uname -m > out; echo done'], outputPaths: ['out'], platform: [['ISA', 'aarch64'], ['OSFamily', 'linux']] });
      const { response, error } = await execute(ws.clients, action);
      expect(error).toBeUndefined();
      expect(response!.status?.code ?? 0).toBe(0);
      expect((await readBlob(ws.clients, response!.result!.outputFiles![0]!.digest)).toString()).toBe('aarch64\n');
      expect(response!.result!.executionMetadata?.worker).toContain(url);
      expect((await upstreamOperations(`${ns.nsAddress}:${upstream.port}`, readFileSync(join(dir, 'token'), 'utf8').trim())).some((op) => op.hash === action.hash && op.done)).toBe(true);
    }, 120_000);

    it('the upstream killed mid-action: the forwarded action fails UNAVAILABLE naming it, local work goes on', async () => {
      const tree = await armRoot();
      const action = await uploadAction(ws.clients, tree.root, { args: ['sleep', '3600'], doNotCache: true, platform: [['ISA', 'aarch64'], ['OSFamily', 'linux']] });
      const forwarded = execute(ws.clients, action);
      await waitFor('the action to run on the upstream', async () => (await upstreamOperations(`${ns.nsAddress}:${upstream.port}`, readFileSync(join(dir, 'token'), 'utf8').trim())).find((op) => op.hash === action.hash && op.stage === 3));
      await upstream.kill();
      const { response, error } = await forwarded;
      expect(error).toBeUndefined();
      expect(response!.status?.code).toBe(14);
      expect(response!.status?.message).toContain(url);
      // Local work goes on, and later forwarded actions fail at once, saying so.
      const local = makeBusyboxRoot();
      roots.push(local);
      const ltree = await treeFromDirectory(local);
      await uploadTree(ws.clients, ltree);
      const l = await execute(ws.clients, await uploadAction(ws.clients, ltree.root, { args: ['sh', '-c', 'echo still here'] }));
      expect((await readBlob(ws.clients, l.response!.result!.stdoutDigest)).toString()).toBe('still here\n');
      const again = await execute(ws.clients, await uploadAction(ws.clients, tree.root, { args: ['true'], doNotCache: true, platform: [['ISA', 'aarch64'], ['OSFamily', 'linux']] }));
      expect(again.response!.status?.code).toBe(14);
      expect(again.response!.status?.message).toContain(url);
    }, 180_000);
  });

  describe('buildbox-casd in server mode (buildbox-run-bubblewrap), execute: upstream', () => {
    let casd: ChildProcess;
    let casdOut = '';
    let ws: TestDaemon;
    let work: string;
    beforeAll(async () => {
      const root = clientsRoot.root!;
      let inside: string;
      ({ work, inside } = makeClientsWork(root, 'reexec-upstream-casd-'));
      const port = await freePort();
      casd = spawnInRoot(root, ['buildbox-casd', `--bind=127.0.0.1:${port}`, '--buildbox-run=buildbox-run-bubblewrap', `${inside}/cache`]);
      casd.stdout!.on('data', (b: Buffer) => (casdOut += b.toString()));
      casd.stderr!.on('data', (b: Buffer) => (casdOut += b.toString()));
      await waitFor('buildbox-casd to listen', async () => {
        if (casd.exitCode !== null) throw new Error(`buildbox-casd exited ${casd.exitCode}:\n${casdOut}`);
        return portOpen('127.0.0.1', port);
      });
      ws = await startTestDaemon(workstation(`grpc://127.0.0.1:${port}`, 'upstream'));
    }, 120_000);
    afterAll(async () => {
      await ws?.stop();
      // casd runs in a process group of its own: the whole group goes.
      try {
        if (casd?.pid) process.kill(-casd.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
      if (work) removeTree(work);
    }, 60_000);

    it('a forwarded action runs through buildbox-run-bubblewrap, its outputs read here', async () => {
      const root = makeBusyboxRoot();
      roots.push(root);
      const tree = await treeFromDirectory(root);
      await uploadTree(ws.clients, tree);
      const action = await uploadAction(ws.clients, tree.root, { args: ['sh', '-c', 'mkdir -p work/d && echo from-casd > work/d/f && echo ok'], outputPaths: ['work/d'] });
      const { response, error } = await execute(ws.clients, action);
      expect(error, casdOut).toBeUndefined();
      expect(response!.status?.code ?? 0, `${response!.status?.message}\n${casdOut}`).toBe(0);
      expect(response!.result!.exitCode).toBe(0);
      expect((await readBlob(ws.clients, response!.result!.stdoutDigest)).toString()).toBe('ok\n');
      const tree2 = re.Tree.decode(await readBlob(ws.clients, response!.result!.outputDirectories![0]!.treeDigest));
      expect((await readBlob(ws.clients, tree2.root!.files![0]!.digest)).toString()).toBe('from-casd\n');
      expect(ws.daemon.execution!.scheduler.list().every((op) => op.pool === 'upstream')).toBe(true);
    }, 120_000);
  });
});

