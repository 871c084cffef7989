import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { call, connect } from '../../src/client/reapi-client.js';
import { treeFromDirectory } from '../../src/client/merkle.js';
import { createTlsSetup } from '../../src/host/tls-setup.js';
import { findBubblewrap } from '../../src/runner/bubblewrap-runner.js';
import { BUSYBOX, makeBusyboxRoot } from '../helpers/busybox-root.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { startDaemonProcess, type DaemonProcess } from '../helpers/daemon-process.js';
import { uploadAction, uploadTree } from '../helpers/exec-client.js';
import { re } from '../../src/proto.js';
import { bytes, digestOf } from '../helpers/storage.js';
import { waitFor } from '../helpers/wait.js';
import { statusFromMessage } from '../../src/services/admin-messages.js';

/** The client connection preface and an empty SETTINGS frame (RFC 9113 3.4, 6.5). */
const PREFACE = Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0])]);

const fdCount = (pid: number): number => readdirSync(`/proc/${pid}/fd`).length;

interface RawConnection {
  socket: net.Socket;
  /** Set once the server has closed it. */
  closed: boolean;
}

/** Raw TCP connections to the daemon, each marked closed when the server closes it. */
async function rawConnections(port: number, n: number, into: net.Socket[]): Promise<RawConnection[]> {
  return Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<RawConnection>((resolve, reject) => {
          const socket = net.connect(port, '127.0.0.1');
          into.push(socket);
          const c: RawConnection = { socket, closed: false };
          socket.once('close', () => (c.closed = true));
          socket.on('error', () => undefined);
          // Discard what the server sends (its SETTINGS), so that its closing is seen.
          socket.resume();
          socket.once('connect', () => resolve(c));
          socket.once('error', reject);
        }),
    ),
  );
}

const tmp = mkdtempSync(join(tmpdir(), 'reexec-connections-'));
const configFile = (name: string, yaml: string): string => {
  const f = join(tmp, `${name}.yaml`);
  writeFileSync(f, yaml);
  return f;
};

/**
 * Issue 19 item 2: connections that never complete the HTTP/2 handshake, that carry no call,
 * or that come in floods, are closed; descriptors go back down; dead peers are dropped; client
 * pings are welcome; calls in flight (a long Execute, a WaitExecution) are never cut.
 */
describe('connection limits', () => {
  const sockets: net.Socket[] = [];
  let d: DaemonProcess | undefined;
  let td: TestDaemon | undefined;
  afterEach(async () => {
    for (const s of sockets.splice(0)) s.destroy();
    await d?.stop();
    await td?.stop();
    d = td = undefined;
  });
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  it('closes 300 silent connections and 20 that send the preface a byte a second, after the handshake timeout; descriptors go back down', async () => {
    const config = configFile('handshake', 'limits: {handshake-timeout: 2s, max-connections-per-client: 1000, max-connections: 2000}\nmetrics: {listen: off}\nexecution: {enabled: false}\n');
    d = await startDaemonProcess({ args: ['--config', config] });
    const clients = connect(d.address);
    try {
      // A client in good standing: it keeps working throughout.
      const probe = digestOf(bytes(100, 1));
      await call(clients.cas, 'FindMissingBlobs', { blobDigests: [probe] });
      const baseline = fdCount(d.pid);

      const silent = await rawConnections(d.port, 300, sockets);
      const dribbling = await rawConnections(d.port, 20, sockets);
      let sent = 0;
      const drip = setInterval(() => {
        if (sent >= PREFACE.length) return;
        for (const c of dribbling) if (!c.closed) c.socket.write(PREFACE.subarray(sent, sent + 1));
        sent++;
      }, 1000);
      try {
        await waitFor('the server to close all 320 connections', () => [...silent, ...dribbling].every((c) => c.closed));
      } finally {
        clearInterval(drip);
      }
      await waitFor("the daemon's descriptors to go back down", () => fdCount(d!.pid) <= baseline + 2);
      await call(clients.cas, 'FindMissingBlobs', { blobDigests: [probe] });
      // Closed for the handshake timeout (not for a completed preface, nor refused), and counted.
      const s = statusFromMessage(await call(clients.admin, 'GetStatus', {}));
      if (!s.connections) throw new Error('the status has no connections');
      expect(s.connections.closed.handshakeTimeout).toBe(320);
      expect(s.connections.refused).toEqual({ maxConnections: 0, maxConnectionsPerClient: 0 });
      expect(s.connections.open).toBe(1);
      expect(d.running()).toBe(true);
    } finally {
      clients.close();
    }
  });

  it('refuses connections past the per-client and total limits as they arrive, and counts them (status, Prometheus)', async () => {
    const socketPath = join(tmp, 'daemon.sock');
    td = await startTestDaemon((c) => {
      c.listen = ['127.0.0.1:0', `unix:${socketPath}`];
      c.limits = { ...c.limits, maxConnectionsPerClient: 5, maxConnections: 8, handshakeTimeoutSeconds: 0 };
      c.execution.enabled = false;
    });
    const port = Number(td.address.split(':').pop());
    const conns = await rawConnections(port, 10, sockets);
    // Five from this address are let in; the next five are closed on arrival.
    await waitFor('five connections to be refused', () => conns.filter((c) => c.closed).length === 5);
    expect(conns.slice(0, 5).some((c) => c.closed)).toBe(false);
    expect(td.daemon.connections.stats()).toMatchObject({ open: 5, clients: 1, busiestClient: 5, refused: { maxConnectionsPerClient: 5, maxConnections: 0 } });
    // The total (8) counts every listener: of four more over the unix socket (no per-client
    // limit there), one is refused.
    for (let i = 0; i < 4; i++) {
      const s = net.connect(socketPath);
      s.on('error', () => undefined);
      sockets.push(s);
    }
    await waitFor('one of the four over the unix socket to be refused', () => td!.daemon.connections.stats().refused.maxConnections === 1);
    expect(td.daemon.connections.stats().open).toBe(8);
    const metrics = await td.daemon.telemetry.registry.metrics();
    expect(metrics).toMatch(/reexec_connections_refused_total\{limit="max_connections_per_client"\} 5/);
    expect(metrics).toMatch(/reexec_connections_refused_total\{limit="max_connections"\} 1/);
    expect(metrics).toMatch(/reexec_connections_open 8/);
  });

  it('over TLS too: a connection that completes its handshake is kept, one that never starts TLS is closed', async () => {
    const tls = await createTlsSetup(join(tmp, 'tls'), { listen: ['127.0.0.1:0'] });
    td = await startTestDaemon((c) => {
      c.tls = { cert: tls.serverCert, key: tls.serverKey, clientCa: null };
      c.limits = { ...c.limits, handshakeTimeoutSeconds: 1 };
      c.execution.enabled = false;
    });
    const clients = connect(td.address, {}, { tls: true, serverCa: readFileSync(tls.caCert) });
    try {
      await call(clients.cas, 'FindMissingBlobs', { blobDigests: [digestOf(bytes(100, 4))] });
      // The TLS session was matched to its connection: its handshake is over.
      expect(td.daemon.connections.stats()).toMatchObject({ open: 1, handshaking: 0 });
      const [raw] = await rawConnections(Number(td.address.split(':').pop()), 1, sockets);
      await waitFor('the connection that never started TLS to be closed', () => raw!.closed);
      expect(td.daemon.connections.stats().closed.handshakeTimeout).toBe(1);
      await call(clients.cas, 'FindMissingBlobs', { blobDigests: [digestOf(bytes(100, 4))] });
      expect(td.daemon.connections.stats().closed.handshakeTimeout).toBe(1);
    } finally {
      clients.close();
    }
  });

  it('closes a connection with no call after the connection idle timeout (GOAWAY); the client reconnects when it next calls', async () => {
    td = await startTestDaemon((c) => {
      c.limits = { ...c.limits, connectionIdleTimeoutSeconds: 1 };
      c.execution.enabled = false;
    });
    const clients = connect(td.address);
    try {
      const probe = digestOf(bytes(100, 2));
      await call(clients.cas, 'FindMissingBlobs', { blobDigests: [probe] });
      await waitFor('the idle connection to be closed', () => td!.daemon.connections.stats().closed.idle >= 1);
      await call(clients.cas, 'FindMissingBlobs', { blobDigests: [probe] });
    } finally {
      clients.close();
    }
  });

  it('drops a peer that stops answering its keepalive pings', async () => {
    td = await startTestDaemon((c) => {
      c.limits = { ...c.limits, keepaliveTimeSeconds: 1, keepaliveTimeoutSeconds: 1 };
      c.execution.enabled = false;
    });
    const port = Number(td.address.split(':').pop());
    // A proxy that can freeze: the peer is still connected, but answers nothing.
    let frozen = false;
    let upstreamClosed = false;
    const proxy = net.createServer((down) => {
      const up = net.connect(port, '127.0.0.1');
      sockets.push(down, up);
      up.on('error', () => undefined);
      down.on('error', () => undefined);
      up.once('close', () => (upstreamClosed = true));
      down.on('data', (b) => !frozen && up.write(b));
      up.on('data', (b) => !frozen && down.write(b));
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', () => r()));
    const clients = connect(`127.0.0.1:${(proxy.address() as net.AddressInfo).port}`);
    try {
      await call(clients.cas, 'FindMissingBlobs', { blobDigests: [digestOf(bytes(100, 3))] });
      frozen = true;
      await waitFor('the server to drop the peer that went quiet', () => upstreamClosed);
    } finally {
      clients.close();
      proxy.close();
    }
  });

  it('answers a client that pings often with no call in flight, never with GOAWAY (BuildStream 1.6 pings every 60 s)', async () => {
    td = await startTestDaemon((c) => {
      c.execution.enabled = false;
    });
    const session = http2.connect(`http://${td.address}`);
    let goaway: number | undefined;
    session.on('goaway', (code: number) => (goaway = code));
    session.on('error', () => undefined);
    try {
      await new Promise<void>((r) => session.once('remoteSettings', () => r()));
      for (let i = 0; i < 50; i++) {
        await new Promise<void>((resolve, reject) => session.ping((err) => (err ? reject(err) : resolve())));
      }
      expect(goaway).toBeUndefined();
      expect(session.closed).toBe(false);
    } finally {
      session.destroy();
    }
  });
});

const noSandbox = !BUSYBOX ? 'busybox-static' : !findBubblewrap() ? 'bubblewrap' : undefined;
if (noSandbox && process.env['CI']) throw new Error(`connection limits with Execute need ${noSandbox} (CI installs it)`);

describe.skipIf(noSandbox)(`connection limits and calls in flight${noSandbox ? ` (skipped: install ${noSandbox})` : ''}`, () => {
  let td: TestDaemon;
  let hostRoot: string;
  beforeAll(async () => {
    td = await startTestDaemon((c) => {
      c.limits = { ...c.limits, connectionIdleTimeoutSeconds: 1, handshakeTimeoutSeconds: 1, idleTimeoutSeconds: 1 };
    });
    hostRoot = makeBusyboxRoot();
  });
  afterAll(async () => {
    await td?.stop();
    if (hostRoot) rmSync(hostRoot, { recursive: true, force: true });
  });

  it('never cuts a long Execute, nor a WaitExecution on another connection, however short the idle timeouts', async () => {
    const tree = await treeFromDirectory(hostRoot);
    await uploadTree(td.clients, tree);
    const action = await uploadAction(td.clients, tree.root, { args: ['sh', '-c', 'sleep 4; echo slept'], doNotCache: true });
    let firstName: string | undefined;
    const running = new Promise<{ done: boolean; exitCode?: number; error?: grpc.ServiceError }>((resolve) => {
      let last: any;
      const stream = (td.clients.execution as any).Execute({ actionDigest: action.toProto(), digestFunction: action.fn.value });
      stream.on('data', (op: any) => ((firstName ??= op.name), (last = op)));
      stream.on('error', (error: grpc.ServiceError) => resolve({ done: false, error }));
      stream.on('end', () => resolve({ done: Boolean(last?.done), exitCode: last?.response ? (re.ExecuteResponse.decode(last.response.value).result?.exitCode ?? 0) : undefined }));
    });
    // A second client waits on the same operation over its own connection.
    const other = connect(td.address);
    try {
      const name = await waitFor('the first update of the Execute', () => firstName);
      const waited = new Promise<{ done: boolean; error?: grpc.ServiceError }>((resolve) => {
        let done = false;
        const s = (other.execution as any).WaitExecution({ name });
        s.on('data', (op: any) => (done ||= op.done));
        s.on('error', (error: grpc.ServiceError) => resolve({ done, error }));
        s.on('end', () => resolve({ done }));
      });
      const r = await running;
      expect(r.error?.details).toBeUndefined();
      expect(r.done).toBe(true);
      expect(r.exitCode).toBe(0);
      const w = await waited;
      expect(w.error?.details).toBeUndefined();
      expect(w.done).toBe(true);
    } finally {
      other.close();
    }
  });
});
