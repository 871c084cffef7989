import { mkdtemp, rm } from 'node:fs/promises';
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
  log: Logger;
}

/**
 * The REAPI sockets of running actions (BuildStream's `sandbox: remote-apis-socket`): one
 * small gRPC server per action, listening on a UNIX socket the runner binds into the sandbox.
 * Its sockets live in a private (0700) directory under a short temporary path, since a socket
 * path holds at most 107 bytes and data dirs can be deep. Only the services `register` adds
 * are reachable through it: no Operations (other clients' work), Remote Asset or admin.
 */
export class NestedApiServers implements NestedApiProvider {
  private dir: Promise<string> | undefined;
  private count = 0;
  private readonly sockets = new Set<NestedApiSocket>();

  constructor(private readonly opts: NestedApiServersOptions) {}

  private socketDir(): Promise<string> {
    // The system's temporary directory unless it is deep: the whole path must fit in a sockaddr_un.
    const base = tmpdir().length <= 48 ? tmpdir() : '/tmp';
    return (this.dir ??= mkdtemp(join(base, 'reexec-api-')));
  }

  async open(execution: Execution): Promise<NestedApiSocket> {
    const dir = await this.socketDir();
    const hostPath = join(dir, `${(++this.count).toString(36)}.sock`);
    const origin: NestedOrigin = { parent: execution.id, rights: execution.rights ?? [] };
    const server = createGrpcServer(this.opts.grpc, this.opts.interceptors(origin));
    this.opts.register(server, origin);
    try {
      await bindAddress(server, `unix:${hostPath}`);
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
