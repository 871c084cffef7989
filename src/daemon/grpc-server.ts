import { chmodSync, existsSync, readFileSync, rmSync } from 'node:fs';
import type * as http2 from 'node:http2';
import { createSecureContext } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { ConfigError, type TlsConfig } from '../config/config.js';
import type { ConnectionGuard } from './connection-guard.js';
import { grantUsers } from '../host/file-acl.js';

export interface GrpcServerOptions {
  maxReceiveMessageBytes: number;
  flowControlWindowBytes: number;
  /** The server pings every connection this often and drops it when no answer comes within keepaliveTimeoutMs. 0: no pings. */
  keepaliveTimeMs?: number;
  keepaliveTimeoutMs?: number;
  /** Told of every listener's server, to watch its connections (limits, handshake and idle timeouts). */
  connections?: ConnectionGuard;
}

/** Told of every connection the server accepts (its HTTP/2 session), e.g. to identify the peer. */
export type ConnectionHook = (session: http2.ServerHttp2Session) => void;

/**
 * A grpc-js server tuned for CAS traffic. grpc-js has no server option for HTTP/2 flow
 * control, and its 64 KiB default window caps uploads near 150-200 MiB/s on loopback; raising
 * the stream window (SETTINGS) and the connection window (per session) took them to ~800 MiB/s.
 * The same hook hands each listener's HTTP/2 server to the ConnectionGuard: grpc-js keeps its
 * sockets to itself.
 *
 * Keepalive: the server pings each connection and drops peers that do not answer. Client
 * pings are never policed (grpc-js's server has no ping policy): BuildStream 1.6 pings every
 * 60 s with no call in flight and must never get GOAWAY "too_many_pings".
 */
export function createGrpcServer(opts: GrpcServerOptions, interceptors: grpc.ServerInterceptor[] = [], onConnection?: ConnectionHook): grpc.Server {
  const keepalive = opts.keepaliveTimeMs ?? 60_000;
  const server = new grpc.Server({
    interceptors,
    'grpc.max_receive_message_length': opts.maxReceiveMessageBytes,
    'grpc.max_send_message_length': -1,
    ...(keepalive > 0 ? { 'grpc.keepalive_time_ms': keepalive, 'grpc.keepalive_timeout_ms': opts.keepaliveTimeoutMs ?? 20_000 } : {}),
  });
  const internals = server as unknown as {
    commonServerOptions?: { settings?: http2.Settings };
    createHttp2Server?: (creds: grpc.ServerCredentials) => http2.Http2Server;
  };
  if (internals.commonServerOptions && typeof internals.createHttp2Server === 'function') {
    internals.commonServerOptions.settings = { ...internals.commonServerOptions.settings, initialWindowSize: opts.flowControlWindowBytes };
    const create = internals.createHttp2Server.bind(server);
    internals.createHttp2Server = (creds) => {
      const h2 = create(creds);
      opts.connections?.attach(h2);
      h2.on('session', (session: http2.ServerHttp2Session) => {
        onConnection?.(session);
        try {
          session.setLocalWindowSize(opts.flowControlWindowBytes);
        } catch {
          /* a session closed before we got to it */
        }
      });
      return h2;
    };
  }
  return server;
}

/** The path of a "unix:PATH" (or "unix://PATH") listen address. */
export const unixSocketPath = (address: string): string => address.slice('unix:'.length).replace(/^\/\/(?=\/)/, '');

/** Server credentials: plain, TLS, or mutual TLS (a client CA: clients without a certificate it signed are refused). */
export function serverCredentials(tls: TlsConfig | null | undefined): grpc.ServerCredentials {
  if (!tls) return grpc.ServerCredentials.createInsecure();
  const read = (what: string, path: string): Buffer => {
    try {
      return readFileSync(path);
    } catch (err) {
      throw new ConfigError(`tls ${what} ${path}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'does not exist' : (err as Error).message}`);
    }
  };
  const pair = { cert_chain: read('cert', tls.cert), private_key: read('key', tls.key) };
  const ca = tls.clientCa ? read('client-ca', tls.clientCa) : null;
  try {
    // Check the pair now: grpc-js would only fail at the first handshake.
    createSecureContext({ cert: pair.cert_chain, key: pair.private_key, ...(ca ? { ca } : {}) });
  } catch (err) {
    throw new ConfigError(`tls: ${tls.cert} and ${tls.key} are not a usable certificate and key: ${(err as Error).message}`);
  }
  return grpc.ServerCredentials.createSsl(ca, [pair], ca !== null);
}

/**
 * Who may connect to a unix socket listener, which the kernel decides by the socket file's
 * permissions: its owner (the daemon's user) and root, plus these uids (ACL entries), or anyone.
 */
export interface SocketAccess {
  any: boolean;
  uids: readonly number[];
}

/** Bind one "HOST:PORT" or "unix:PATH" address; returns what it really listens on. */
export async function bindAddress(server: grpc.Server, address: string, tls?: TlsConfig | null, access: SocketAccess = { any: false, uids: [] }): Promise<string> {
  let target = address;
  let socketPath: string | undefined;
  if (address.startsWith('unix:')) {
    socketPath = unixSocketPath(address);
    target = `unix:${socketPath}`;
    // A socket file left by a dead daemon would make bind fail (the data dir lock proves it is dead).
    if (existsSync(socketPath)) rmSync(socketPath, { force: true });
  }
  const creds = serverCredentials(tls);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(target, creds, (err, p) => (err ? reject(err) : resolve(p))),
  ).catch((err: Error) => {
    throw new Error(`cannot listen on ${address}: ${err.message}${/in use/i.test(err.message) ? ' (another process has it: pick another with --listen HOST:PORT, or port 0 for any free one)' : ''}`);
  });
  if (socketPath) {
    chmodSync(socketPath, access.any ? 0o666 : 0o600);
    if (!access.any) grantUsers(socketPath, access.uids);
    return `unix:${socketPath}`;
  }
  const host = address.slice(0, address.lastIndexOf(':'));
  return `${host}:${port}`;
}
