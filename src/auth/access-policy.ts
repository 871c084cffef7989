import { isIP } from 'node:net';
import type * as grpc from '@grpc/grpc-js';
import { Code, StatusError } from '../util/status-error.js';
import { ALL_RIGHTS, formatRights, type Right } from './rights.js';
import { LocalUsers } from './local-users.js';
import type { TokenFile } from './token-file.js';

/** What an RPC needs: a right, any right at all (Capabilities), or nothing (health checks). */
export type Requirement = Right | 'any' | 'open';

const RE = 'build.bazel.remote.execution.v2';
const ASSET = 'build.bazel.remote.asset.v1';

/** Services anyone may call: load balancers' health checks, and reflection (descriptors only). */
const OPEN_SERVICES = new Set(['grpc.health.v1.Health', 'grpc.reflection.v1alpha.ServerReflection', 'grpc.reflection.v1.ServerReflection']);

const METHOD_RIGHTS: Record<string, Requirement> = {
  [`/${RE}.Capabilities/GetCapabilities`]: 'any',
  [`/${RE}.ContentAddressableStorage/FindMissingBlobs`]: 'read',
  [`/${RE}.ContentAddressableStorage/BatchReadBlobs`]: 'read',
  [`/${RE}.ContentAddressableStorage/GetTree`]: 'read',
  [`/${RE}.ContentAddressableStorage/SplitBlob`]: 'read',
  [`/${RE}.ContentAddressableStorage/BatchUpdateBlobs`]: 'write',
  [`/${RE}.ContentAddressableStorage/SpliceBlob`]: 'write',
  '/google.bytestream.ByteStream/Read': 'read',
  '/google.bytestream.ByteStream/Write': 'write',
  '/google.bytestream.ByteStream/QueryWriteStatus': 'write',
  [`/${RE}.ActionCache/GetActionResult`]: 'read',
  [`/${RE}.ActionCache/UpdateActionResult`]: 'write',
  [`/${ASSET}.Fetch/FetchBlob`]: 'read',
  [`/${ASSET}.Fetch/FetchDirectory`]: 'read',
  [`/${ASSET}.Push/PushBlob`]: 'write',
  [`/${ASSET}.Push/PushDirectory`]: 'write',
  [`/${RE}.Execution/Execute`]: 'execute',
  [`/${RE}.Execution/WaitExecution`]: 'execute',
  ['/google.devtools.remoteworkers.v1test2.Bots/CreateBotSession']: 'worker',
  ['/google.devtools.remoteworkers.v1test2.Bots/UpdateBotSession']: 'worker',
};

/** What calling `path` ("/package.Service/Method") needs. Unknown methods need admin: deny by default. */
export function requirementOf(path: string): Requirement {
  const known = METHOD_RIGHTS[path];
  if (known) return known;
  const service = /^\/([^/]+)\//.exec(path)?.[1] ?? '';
  if (OPEN_SERVICES.has(service)) return 'open';
  if (service === 'google.longrunning.Operations') return 'execute';
  return 'admin';
}

/**
 * Remote Asset calls whose request must be looked at before authorisation: BuildStream probes
 * for a Remote Asset server with an empty URI list and needs INVALID_ARGUMENT back (OK sends
 * 1.6 to a legacy protocol; PERMISSION_DENIED or UNAUTHENTICATED disables the cache).
 */
export const PROBE_METHODS = new Set([`/${ASSET}.Fetch/FetchBlob`, `/${ASSET}.Fetch/FetchDirectory`, `/${ASSET}.Push/PushBlob`, `/${ASSET}.Push/PushDirectory`]);

/** A request the asset service refuses with INVALID_ARGUMENT whoever sends it (see requireUris). */
export function isAssetProbe(request: unknown): boolean {
  const uris = (request as { uris?: unknown } | null)?.uris;
  return !Array.isArray(uris) || uris.length === 0 || uris.some((u) => !u);
}

export interface Caller {
  /** For logs and per-client limits: the token's name, else the peer's address. */
  name: string;
  rights: ReadonlySet<Right>;
}

/** Where a call comes from. */
export interface Peer {
  /** Absent on unix sockets. */
  remoteAddress?: string;
  /**
   * TCP: the uid owning the peer's socket when it is a process of this host (see
   * SocketOwners); undefined for other machines and peers that could not be identified.
   */
  uid?: number;
  /** The connection presented a client certificate the server's client CA verified. */
  certificate?: boolean;
}

/** Loopback addresses (127/8, ::1, ::ffff:127/104): only this host reaches them. */
export function isLoopbackAddress(a: string): boolean {
  const v4 = a.startsWith('::ffff:') ? a.slice(7) : a;
  return a === '::1' || (isIP(v4) === 4 && v4.startsWith('127.'));
}

/** A peer on this host: a unix socket (no address) or a loopback address. */
export function isLocalPeer(peer: Peer): boolean {
  return !peer.remoteAddress || isLoopbackAddress(peer.remoteAddress);
}

/** Other machines with a client certificate: everything but admin (a bot's results are no more trusted than UpdateActionResult's). */
const READ_WRITE_EXECUTE: ReadonlySet<Right> = new Set(['read', 'write', 'execute', 'worker']);

/** The bearer token of a call, if it sent one ("authorization: Bearer TOKEN"). */
export function bearerToken(metadata: grpc.Metadata): string | undefined {
  for (const v of metadata.get('authorization')) {
    const m = /^\s*bearer\s+(\S+)\s*$/i.exec(v.toString());
    if (m) return m[1];
  }
  return undefined;
}

/**
 * Who may do what. With a token file, a client has the rights of the token it presents
 * (a wrong token is UNAUTHENTICATED) and a client without one has the anonymous rights.
 *
 * Without a token file, only local users are served, and by default only the daemon's own
 * user and root (LocalUsers): over TCP the peer's socket owner decides (a peer that cannot be
 * identified is refused); over a unix socket the kernel does, through the socket file's
 * permissions (mode 0600, an ACL entry per admitted user, 0666 for any). They get every right.
 * Other machines need a client certificate (mutual TLS), which gives read, write, execute and
 * worker (bots).
 */
export class AccessPolicy {
  constructor(
    private readonly tokens: TokenFile | undefined,
    private readonly anonymous: ReadonlySet<Right> = new Set(),
    /** Who is served without tokens; undefined: only the daemon's own user and root. */
    private readonly local: LocalUsers = LocalUsers.resolve([], 'the config file'),
  ) {}

  get tokensRequired(): boolean {
    return this.tokens !== undefined;
  }

  /** Whether identify needs the peer's socket owner (TCP peers without a token file). */
  needsOwner(peer: Peer): boolean {
    return !this.tokens && peer.remoteAddress !== undefined;
  }

  /**
   * Who is calling. Throws UNAUTHENTICATED for a token the file does not hold, PERMISSION_DENIED
   * for a local user this daemon does not serve, UNAUTHENTICATED for another machine without
   * credentials.
   */
  identify(metadata: grpc.Metadata, peer: Peer): Caller {
    const host = peer.remoteAddress ?? 'unix';
    if (!this.tokens) {
      // The socket file's permissions decided who could connect.
      if (peer.remoteAddress === undefined) return { name: host, rights: ALL_RIGHTS };
      if (peer.uid !== undefined) {
        if (this.local.admits(peer.uid)) return { name: peer.uid === this.local.ownerUid ? host : `uid ${peer.uid}@${host}`, rights: ALL_RIGHTS };
        if (peer.certificate) return { name: `uid ${peer.uid}@${host}`, rights: READ_WRITE_EXECUTE };
        throw this.local.refusal(peer.uid);
      }
      if (peer.certificate) return { name: host, rights: READ_WRITE_EXECUTE };
      if (isLoopbackAddress(peer.remoteAddress)) {
        throw new StatusError(Code.PERMISSION_DENIED, `no process of this host owns the other end of this loopback connection (${peer.remoteAddress}): reexec cannot tell which user it serves, so it refuses`);
      }
      throw new StatusError(
        Code.UNAUTHENTICATED,
        `this reexec serves other machines only with credentials: an access token (auth.token-file) or a client certificate (tls.client-ca); \`reexec init --tls\` sets up both`,
      );
    }
    const token = bearerToken(metadata);
    if (token === undefined) return { name: `anonymous@${host}`, rights: this.anonymous };
    const entry = this.tokens.lookup(token);
    if (!entry) throw new StatusError(Code.UNAUTHENTICATED, 'the access token is not valid on this server (revoked, mistyped, or meant for another server)');
    return { name: entry.name, rights: entry.rights };
  }

  /**
   * The rights of a call that was admitted (for Capabilities): from its token with a token
   * file (none for a bad one); without one, every admitted caller may read, write and execute.
   */
  rightsFor(metadata: grpc.Metadata): ReadonlySet<Right> {
    if (!this.tokens) return READ_WRITE_EXECUTE;
    try {
      return this.identify(metadata, { remoteAddress: 'remote' }).rights;
    } catch {
      return new Set();
    }
  }

  /** Why `caller` may not make a call needing `need`, or undefined if it may. */
  refusal(caller: Caller, need: Requirement, path: string): StatusError | undefined {
    if (need === 'open') return undefined;
    if (need === 'any' ? caller.rights.size > 0 : caller.rights.has(need)) return undefined;
    const method = path.slice(path.lastIndexOf('/') + 1);
    if (caller.rights.size === 0) {
      return new StatusError(
        Code.UNAUTHENTICATED,
        `${method} needs an access token on this server: send "authorization: Bearer TOKEN" (BuildStream: access-token; Bazel: --remote_header=authorization=Bearer TOKEN)`,
      );
    }
    if (need === 'admin' && !this.tokens) {
      return new StatusError(Code.PERMISSION_DENIED, `${method} is served to local users only (unix socket or this host's TCP) while no token file is configured`);
    }
    return new StatusError(Code.PERMISSION_DENIED, `${method} needs the "${need}" right; this client has: ${formatRights(caller.rights)}`);
  }
}
