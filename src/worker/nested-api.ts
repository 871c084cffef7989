import type { Execution } from '../scheduler/operation.js';

/**
 * A REAPI endpoint for one running action (platform property remoteApisSocketPath): a UNIX
 * socket on the host side, bound into the action's sandbox at the path it asked for.
 */
export interface NestedApiSocket {
  /** Host path of the socket; short enough for bind() (see MAX_SOCKET_PATH_BYTES). */
  readonly hostPath: string;
  /** Stop serving and remove the socket: nothing of it outlives the action. */
  close(): Promise<void>;
}

/**
 * Opens those endpoints. The gRPC layer implements it: CAS, ByteStream, ActionCache,
 * Capabilities and Execution of this server, with the rights of the execution's submitter,
 * and Executes through it counted as the execution's nested work (see Scheduler.nextNested).
 */
export interface NestedApiProvider {
  open(execution: Execution): Promise<NestedApiSocket>;
  /** Host paths of the sockets open now, for status and tests. */
  readonly openSockets?: string[];
  /** The directory holding the sockets, once there is one: hidden from host-tools actions. */
  readonly socketDir?: string;
  /** Close what is still open (daemon shutdown). */
  close?(): Promise<void>;
}
