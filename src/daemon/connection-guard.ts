import { readFileSync } from 'node:fs';
import type * as http2 from 'node:http2';
import type { Server as NetServer, Socket } from 'node:net';
import type { Logger } from '../util/logger.js';

export interface ConnectionLimits {
  /** Open connections across every listener; more are closed as they arrive. 0: no limit. */
  maxConnections: number;
  /** Open connections from one client address (TCP; unix sockets count only in the total). 0: no limit. */
  maxConnectionsPerClient: number;
  /** A connection must have sent the HTTP/2 preface and SETTINGS (after TLS) within this. 0: no limit. */
  handshakeTimeoutMs: number;
  /** A connection with no call in flight for this long is closed (GOAWAY: clients reconnect). 0: never. */
  idleTimeoutMs: number;
}

/** What `reexec status` and the metrics show of connections. */
export interface ConnectionStats {
  /** Open now (TCP and unix sockets), of which still in the handshake. */
  open: number;
  handshaking: number;
  /** Distinct client addresses with a connection open. */
  clients: number;
  /** The most connections one client address has open. */
  busiestClient: number;
  limits: { maxConnections: number; maxConnectionsPerClient: number };
  /** Since the daemon started: connections accepted, and closed by the server by reason. */
  accepted: number;
  refused: { maxConnections: number; maxConnectionsPerClient: number };
  closed: { handshakeTimeout: number; idle: number };
}

/** Half the process's open-file limit (each connection is a descriptor), at most 4096; 1024 where it cannot be read. */
export function autoMaxConnections(): number {
  try {
    const m = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    if (m && m[1] !== 'unlimited') return Math.max(16, Math.min(4096, Math.floor(Number(m[1]) / 2)));
    if (m) return 4096;
  } catch {
    /* not Linux */
  }
  return 1024;
}

interface Tracked {
  socket: Socket;
  client: string | undefined;
  handshakeTimer?: NodeJS.Timeout;
  session?: http2.ServerHttp2Session;
  /** Calls (HTTP/2 streams) in flight. */
  streams: number;
  /** When the last call ended (or the connection opened). */
  idleSince: number;
}

/**
 * The connections under the gRPC server, as the gRPC server cannot see them: it is given
 * every listener's server (a net.Server: grpc-js's HTTP/2 server) and watches raw sockets.
 * It closes connections that do not complete the HTTP/2 handshake in time (silent sockets,
 * a preface dribbled a byte at a time), connections with no call for a long time, and
 * connections past the total or per-client-address limit. A connection with a call in
 * flight (a running Execute, a WaitExecution long-poll) is never idle. Dead peers are
 * grpc-js's keepalive pings' business.
 */
export class ConnectionGuard {
  private readonly open = new Map<Socket, Tracked>();
  private readonly perClient = new Map<string, number>();
  /** By file descriptor: the session's socket is a proxy of the raw one. */
  private readonly byFd = new Map<number, Tracked>();
  private readonly counts = { accepted: 0, refusedTotal: 0, refusedPerClient: 0, handshakeTimeout: 0, idle: 0 };
  private sweeper: NodeJS.Timeout | undefined;
  private lastRefusalLog = 0;
  private readonly log: Logger;

  constructor(
    private readonly limits: ConnectionLimits,
    log: Logger,
  ) {
    this.log = log.child({ component: 'connections' });
    if (limits.idleTimeoutMs > 0) {
      this.sweeper = setInterval(() => this.sweepIdle(), Math.max(50, Math.min(10_000, Math.floor(limits.idleTimeoutMs / 4))));
      this.sweeper.unref();
    }
  }

  stop(): void {
    if (this.sweeper) clearInterval(this.sweeper);
    this.sweeper = undefined;
    for (const t of this.open.values()) clearTimeout(t.handshakeTimer);
  }

  /** Watch the connections of one listener's server (call before it accepts any). */
  attach(server: NetServer): void {
    // Before the HTTP/2 server's own listener: a plain-text session is created (and
    // 'session' emitted) within it, so the connection must be known first.
    server.prependListener('connection', (socket: Socket) => this.onConnection(socket));
    server.on('session', (session: http2.ServerHttp2Session) => this.onSession(session));
  }

  stats(): ConnectionStats {
    let handshaking = 0;
    for (const t of this.open.values()) if (t.handshakeTimer) handshaking++;
    let busiest = 0;
    for (const n of this.perClient.values()) busiest = Math.max(busiest, n);
    const c = this.counts;
    return {
      open: this.open.size,
      handshaking,
      clients: this.perClient.size,
      busiestClient: busiest,
      limits: { maxConnections: this.limits.maxConnections, maxConnectionsPerClient: this.limits.maxConnectionsPerClient },
      accepted: c.accepted,
      refused: { maxConnections: c.refusedTotal, maxConnectionsPerClient: c.refusedPerClient },
      closed: { handshakeTimeout: c.handshakeTimeout, idle: c.idle },
    };
  }

  private onConnection(socket: Socket): void {
    const client = socket.remoteAddress ? normalizeAddress(socket.remoteAddress) : undefined;
    const { maxConnections, maxConnectionsPerClient, handshakeTimeoutMs } = this.limits;
    const fromClient = client === undefined ? 0 : (this.perClient.get(client) ?? 0);
    if (maxConnections > 0 && this.open.size >= maxConnections) {
      this.counts.refusedTotal++;
      this.refuse(socket, `${this.open.size} connections are open, the most limits.max-connections allows`);
      return;
    }
    if (client !== undefined && maxConnectionsPerClient > 0 && fromClient >= maxConnectionsPerClient) {
      this.counts.refusedPerClient++;
      this.refuse(socket, `${client} has ${fromClient} connections open, the most limits.max-connections-per-client allows`);
      return;
    }
    this.counts.accepted++;
    const t: Tracked = { socket, client, streams: 0, idleSince: Date.now() };
    this.open.set(socket, t);
    if (client !== undefined) this.perClient.set(client, fromClient + 1);
    const fd = fdOf(socket);
    if (fd !== undefined) this.byFd.set(fd, t);
    if (handshakeTimeoutMs > 0) {
      t.handshakeTimer = setTimeout(() => {
        t.handshakeTimer = undefined;
        this.counts.handshakeTimeout++;
        this.log.debug(`closed a connection from ${client ?? 'a unix socket'} that did not complete the HTTP/2 handshake within ${handshakeTimeoutMs} ms`);
        socket.destroy();
      }, handshakeTimeoutMs);
      t.handshakeTimer.unref();
    }
    socket.once('close', () => {
      clearTimeout(t.handshakeTimer);
      t.handshakeTimer = undefined;
      this.open.delete(socket);
      if (fd !== undefined && this.byFd.get(fd) === t) this.byFd.delete(fd);
      if (client !== undefined) {
        const n = (this.perClient.get(client) ?? 1) - 1;
        if (n <= 0) this.perClient.delete(client);
        else this.perClient.set(client, n);
      }
    });
  }

  private refuse(socket: Socket, why: string): void {
    // Once in a while, not once per connection of a flood.
    const now = Date.now();
    if (now - this.lastRefusalLog > 10_000) {
      this.lastRefusalLog = now;
      this.log.warn(`refusing connections: ${why}`);
    }
    socket.destroy();
  }

  private onSession(session: http2.ServerHttp2Session): void {
    // A proxy of the socket; with TLS, of the TLS socket that wraps the raw one.
    const socket = session.socket as (Socket & { _parent?: Socket | null }) | undefined;
    const raw = socket?._parent ?? socket;
    const fd = raw ? fdOf(raw) : undefined;
    const t = raw ? (this.open.get(raw) ?? (fd === undefined ? undefined : this.byFd.get(fd))) : undefined;
    if (!t) return;
    t.session = session;
    session.once('remoteSettings', () => {
      clearTimeout(t.handshakeTimer);
      t.handshakeTimer = undefined;
    });
    session.on('stream', (stream: http2.ServerHttp2Stream) => {
      t.streams++;
      stream.once('close', () => {
        t.streams--;
        if (t.streams === 0) t.idleSince = Date.now();
      });
    });
  }

  private sweepIdle(): void {
    const now = Date.now();
    for (const t of this.open.values()) {
      if (t.streams > 0 || t.handshakeTimer || !t.session || t.session.closed || now - t.idleSince < this.limits.idleTimeoutMs) continue;
      this.counts.idle++;
      this.log.debug(`closing a connection from ${t.client ?? 'a unix socket'}: no call for ${Math.round((now - t.idleSince) / 1000)} s`);
      // GOAWAY, then close: a client reconnects when it next calls.
      t.session.close();
      const socket = t.socket;
      setTimeout(() => socket.destroy(), 5000).unref();
    }
  }
}

/** "::ffff:127.0.0.1" and "127.0.0.1" are one client. */
function normalizeAddress(a: string): string {
  return a.startsWith('::ffff:') ? a.slice(7) : a;
}

function fdOf(s: Socket): number | undefined {
  const fd = (s as unknown as { _handle?: { fd?: number } })._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
}
