import { execFileSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '../../src/client/reapi-client.js';
import { DEFAULT_UPSTREAM } from '../../src/config/config.js';
import { Digest } from '../../src/digest/digest.js';
import { createNetNs, spawnInRoot, type NetNs } from '../helpers/bots.js';
import { makeClientsWork, prepareClientsRoot } from '../helpers/clients-root.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { freePort, startDaemonProcess, type DaemonProcess } from '../helpers/daemon-process.js';
import { isExecutable } from '../helpers/run-client.js';
import { blobName, bsRead, bsWrite, bytes, call, digestOf } from '../helpers/storage.js';
import { waitFor } from '../helpers/wait.js';

/**
 * A workstation reexec (this process) in front of an upstream in its own network namespace,
 * reached over a veth pair: another reexec, and buildbox-casd in server mode from the
 * clients root. The outage is real: the veth link goes down (packets vanish, calls run into
 * their deadlines), then comes back.
 */
const isRoot = process.getuid?.() === 0;
const hasIp = ['/usr/sbin/ip', '/sbin/ip', '/usr/bin/ip'].some(isExecutable);
// Under CI nothing skips: a missing tool fails in createNetNs / prepareClientsRoot.
const skip = process.env.CI ? undefined : !isRoot ? 'network namespaces need root' : !hasIp ? 'install iproute2 (ip)' : undefined;
if (skip) console.warn(`upstream network-namespace test skipped: ${skip}`);

type Clients = ReturnType<typeof connect>;
const upload = async (c: Clients, ...blobs: Buffer[]): Promise<void> => {
  const res: any = await call(c.cas, 'BatchUpdateBlobs', { requests: blobs.map((b) => ({ digest: digestOf(b), data: b })) });
  for (const r of res.responses) expect(r.status?.code ?? 0).toBe(0);
};
const missing = async (c: Clients, ...blobs: Buffer[]): Promise<string[]> => {
  const res: any = await call(c.cas, 'FindMissingBlobs', { blobDigests: blobs.map(digestOf) });
  return res.missingBlobDigests.map((d: any) => d.hash);
};

interface Upstream {
  url: string;
  /** A file holding the token the workstation sends, if the upstream wants one. */
  tokenFile?: string;
  clients: Clients;
  stop(): Promise<void>;
}

/** The scenario, the same for every kind of upstream. */
function scenario(kind: string, startUpstream: (ns: NetNs) => Promise<Upstream>, seed: number): void {
  describe.skipIf(!!skip)(`reexec in front of ${kind} in another network namespace`, () => {
    let ns: NetNs;
    let upstream: Upstream;
    let ws: TestDaemon;
    const link = (state: 'up' | 'down'): void => {
      execFileSync('ip', ['link', 'set', ns.hostInterface, state]);
    };

    beforeAll(async () => {
      ns = createNetNs();
      upstream = await startUpstream(ns);
      ws = await startTestDaemon((c) => {
        c.upstream = { ...DEFAULT_UPSTREAM, url: upstream.url, tokenFile: upstream.tokenFile ?? null, callTimeoutSeconds: 3, retry: { initialSeconds: 0.2, maxSeconds: 1 } };
      });
    }, 180_000);
    afterAll(async () => {
      await ws?.stop();
      await upstream?.stop();
      ns?.remove();
    });

    it('reads through, and writes behind', async () => {
      const there = bytes(5000, seed + 1);
      const large = bytes(5 * 1024 * 1024 + 3, seed + 2);
      await upload(upstream.clients, there);
      const res: any = await call(ws.clients.cas, 'BatchReadBlobs', { digests: [digestOf(there)] });
      expect(Buffer.from(res.responses[0].data).equals(there)).toBe(true);
      await waitFor('the blob read through to be kept locally (it is stored behind the answer)', () => ws.daemon.casBase.record(Digest.compute(there)) !== undefined);

      const mine = bytes(7000, seed + 3);
      await upload(ws.clients, mine);
      await bsWrite(ws.clients.byteStream, large);
      const queue = ws.daemon.storage.upstream!.queue!;
      await waitFor('the upload queue to drain', () => queue.length === 0);
      expect(await missing(upstream.clients, mine, large)).toEqual([]);
      expect((await bsRead(upstream.clients.byteStream, blobName(digestOf(large)))).equals(large)).toBe(true);
    });

    it('action cache through: a complete upstream entry is a hit, one whose blobs the upstream lacks a miss', async () => {
      const out = bytes(3000, seed + 20);
      const lost = bytes(3000, seed + 21);
      await upload(upstream.clients, out);
      const complete = digestOf(Buffer.from(`complete action ${seed}`));
      const incomplete = digestOf(Buffer.from(`incomplete action ${seed}`));
      await call(upstream.clients.actionCache, 'UpdateActionResult', { actionDigest: complete, actionResult: { exitCode: 0, outputFiles: [{ path: 'o', digest: digestOf(out) }] } });
      // Some servers refuse to store it at all; those that take it must not make it a hit here.
      await call(upstream.clients.actionCache, 'UpdateActionResult', { actionDigest: incomplete, actionResult: { exitCode: 0, outputFiles: [{ path: 'o', digest: digestOf(lost) }] } }).catch(() => undefined);
      const got: any = await call(ws.clients.actionCache, 'GetActionResult', { actionDigest: complete });
      expect(got.outputFiles[0].digest).toEqual(digestOf(out));
      const servedUpstream = await call(upstream.clients.actionCache, 'GetActionResult', { actionDigest: incomplete }).then(() => true, () => false);
      const stats = ws.daemon.storage.upstream!.stats;
      const before = stats.ac.incomplete;
      await expect(call(ws.clients.actionCache, 'GetActionResult', { actionDigest: incomplete })).rejects.toMatchObject({ code: grpc.status.NOT_FOUND });
      expect(stats.ac.incomplete).toBe(before + (servedUpstream ? 1 : 0));
      // The output comes through the CAS when read.
      const res: any = await call(ws.clients.cas, 'BatchReadBlobs', { digests: [digestOf(out)] });
      expect(Buffer.from(res.responses[0].data).equals(out)).toBe(true);
    });

    it('cut off: local hits go on, misses answer as misses within the deadline, uploads wait and drain once the link is back', async () => {
      const kept = bytes(4000, seed + 10);
      await upload(ws.clients, kept);
      const queue = ws.daemon.storage.upstream!.queue!;
      await waitFor('the upload queue to drain', () => queue.length === 0);
      link('down');
      try {
        const absent = bytes(300, seed + 11);
        // The first miss runs into the call deadline (the packets vanish) and marks the upstream down.
        const miss: any = await call(ws.clients.cas, 'BatchReadBlobs', { digests: [digestOf(absent)] });
        expect(miss.responses[0].status.code).toBe(grpc.status.NOT_FOUND);
        await waitFor('the upstream to be seen down', () => ws.daemon.upstream!.health().state === 'down');
        expect(ws.daemon.upstream!.health().lastError).toContain(upstream.url);
        const hit: any = await call(ws.clients.cas, 'BatchReadBlobs', { digests: [digestOf(kept)] });
        expect(Buffer.from(hit.responses[0].data).equals(kept)).toBe(true);
        expect(await missing(ws.clients, kept, absent)).toEqual([digestOf(absent).hash]);
        const fresh = bytes(3500, seed + 12);
        await upload(ws.clients, fresh);
        await waitFor('the new upload to be queued', () => queue.length === 1);
        link('up');
        await waitFor('the upstream to be seen up again', () => ws.daemon.upstream!.health().state === 'up');
        await waitFor('the queued upload to drain', () => queue.length === 0);
        expect(await missing(upstream.clients, fresh)).toEqual([]);
      } finally {
        link('up');
      }
    });
  });
}

scenario(
  'another reexec',
  async (ns) => {
    // Another host: it serves it only with a token (the workstation's, from upstream.token-file).
    const dir = mkdtempSync(join(tmpdir(), 'reexec-upstream-'));
    const token = randomBytes(24).toString('hex');
    writeFileSync(join(dir, 'tokens.yaml'), `${token}: [read, write, execute]\n`, { mode: 0o600 });
    writeFileSync(join(dir, 'token'), `${token}\n`, { mode: 0o600 });
    writeFileSync(join(dir, 'config.yaml'), `auth:\n  token-file: ${JSON.stringify(join(dir, 'tokens.yaml'))}\nmetrics:\n  listen: off\n`);
    const d: DaemonProcess = await startDaemonProcess({ netns: ns.name, listen: [`${ns.nsAddress}:0`], args: ['--config', join(dir, 'config.yaml')] });
    const url = `grpc://${d.address}`;
    const clients = connect(url, {}, { token });
    return {
      url,
      tokenFile: join(dir, 'token'),
      clients,
      stop: async () => {
        clients.close();
        await d.stop();
        rmSync(dir, { recursive: true, force: true });
      },
    };
  },
  100,
);

const clientsRoot = isRoot ? prepareClientsRoot() : { skip: 'needs root' };
scenario(
  'buildbox-casd (server mode, from the clients root)',
  async (ns) => {
    if (clientsRoot.skip) throw new Error(`the clients root is needed: ${clientsRoot.skip}`);
    const { work, inside } = makeClientsWork(clientsRoot.root!, 'upstream-casd');
    mkdirSync(join(work, 'cache'), { recursive: true });
    const port = await freePort();
    const casd: ChildProcess = spawnInRoot(clientsRoot.root!, ['buildbox-casd', `--bind=${ns.nsAddress}:${port}`, `${inside}/cache`], ns.name);
    let out = '';
    casd.stdout!.on('data', (b: Buffer) => (out += b.toString()));
    casd.stderr!.on('data', (b: Buffer) => (out += b.toString()));
    const url = `grpc://${ns.nsAddress}:${port}`;
    const clients = connect(url);
    await waitFor(`buildbox-casd to serve on ${url} (${out})`, () => call(clients.capabilities, 'GetCapabilities', {}).then(() => true, () => (casd.exitCode !== null ? Promise.reject(new Error(`casd exited: ${out}`)) : false)));
    return {
      url,
      clients,
      stop: async () => {
        clients.close();
        try {
          process.kill(-casd.pid!, 'SIGTERM');
        } catch {
          /* gone */
        }
        await new Promise((r) => (casd.exitCode !== null ? r(undefined) : casd.once('exit', r)));
      },
    };
  },
  200,
);
