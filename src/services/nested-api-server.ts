import { chmod, chown, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type * as grpc from '@grpc/grpc-js';
import { bindAddress, createGrpcServer, type GrpcServerOptions } from '../daemon/grpc-server.js';
import type { Execution } from '../scheduler/operation.js';
import type { Logger } from '../util/logger.js';
import { internal } from '../util/status-error.js';
import type { NestedApiProvider, NestedApiSocket } from '../worker/nested-api.js';

/** Whose REAPI socket a server is: the execution it belongs to, and the rights of that execution's submitter. */
export interface NestedOrigin {
  parent: string;
  rights: readonly string[];
}

export interface NestedApiServersOptions {
  grpc: GrpcServerOptions;
  /** The interceptors of one socket's server: access control with the origin's rights as its only caller. */
  interceptors: (origin: NestedOrigin) => grpc.ServerInterceptor[];
  /** Adds the services one socket serves (CAS, ByteStream, ActionCache, Capabilities, Execution). */
  register: (server: grpc.Server, origin: NestedOrigin) => void;
  /**
   * The user actions run as when the daemon (root) switches to one: it must reach the sockets
   * (traverse their directory, connect to them) and nobody else may. Else the daemon's own user.
   */
  runAs?: { uid: number; gid: number };
  log: Logger;
}

/**
 * The REAPI sockets of running actions (BuildStream's `sandbox: remote-apis-socket`): one
 * small gRPC server per action, listening on a UNIX socket the runner binds into the sandbox.
 * Its sockets live in a private directory under a short temporary path, since a socket path
 * holds at most 107 bytes and data dirs can be deep: the daemon's own (0700), or, when actions
 * run as another user (runAs), root's with that user's group allowed to traverse it (0710) and
 * each socket that user's (0600). Only the services `register` adds are reachable through it:
 * no Operations (other clients' work), Remote Asset or admin.
 */
export class NestedApiServers implements NestedApiProvider {
  private dir: Promise<string> | undefined;
  private dirPath: string | undefined;
  private count = 0;
  private readonly sockets = new Set<NestedApiSocket>();

  constructor(private readonly opts: NestedApiServersOptions) {}

  private makeSocketDir(): Promise<string> {
    // The system's temporary directory unless it is deep: the whole path must fit in a sockaddr_un.
    const base = tmpdir().length <= 48 ? tmpdir() : '/tmp';
    return (this.dir ??= mkdtemp(join(base, 'reexec-api-')).then(async (dir) => {
      const as = this.opts.runAs;
      if (as) {
        await chown(dir, process.getuid?.() ?? 0, as.gid);
        await chmod(dir, 0o710);
      }
      return (this.dirPath = dir);
    }));
  }

  /** The directory holding the sockets, once the first was opened: host-tools actions never see it. */
  get socketDir(): string | undefined {
    return this.dirPath;
  }

  async open(execution: Execution): Promise<NestedApiSocket> {
    const dir = await this.makeSocketDir();
    const hostPath = join(dir, `${(++this.count).toString(36)}.sock`);
    const origin: NestedOrigin = { parent: execution.id, rights: execution.rights ?? [] };
    const server = createGrpcServer(this.opts.grpc, this.opts.interceptors(origin));
    this.opts.register(server, origin);
    try {
      await bindAddress(server, `unix:${hostPath}`);
      // bindAddress made it 0600: the run-as user's, so that the action (and only it) may connect.
      if (this.opts.runAs) await chown(hostPath, this.opts.runAs.uid, this.opts.runAs.gid);
    } catch (err) {
      server.forceShutdown();
      throw internal(`could not open the REAPI socket of the action at ${hostPath}: ${(err as Error).message}`);
    }
    const socket: NestedApiSocket = {
      hostPath,
      close: async () => {
        if (!this.sockets.delete(socket)) return;
        server.forceShutdown();
        await rm(hostPath, { force: true });
      },
    };
    this.sockets.add(socket);
    this.opts.log.debug(`REAPI socket for execution ${execution.id} at ${hostPath}`);
    return socket;
  }

  /** Host paths of the sockets open now (one per running action that asked for one). */
  get openSockets(): string[] {
    return [...this.sockets].map((s) => s.hostPath);
  }

  /** Close every socket still open and remove their directory. */
  async close(): Promise<void> {
    await Promise.all([...this.sockets].map((s) => s.close()));
    if (this.dir) await rm(await this.dir, { recursive: true, force: true });
  }
}
