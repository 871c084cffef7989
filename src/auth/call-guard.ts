import * as http2 from 'node:http2';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from '../util/logger.js';
import { Code, StatusError } from '../util/status-error.js';
import { isAssetProbe, PROBE_METHODS, requirementOf, type AccessPolicy, type Caller, type Peer } from './access-policy.js';
import { SocketOwners, tcpEnds } from './socket-owners.js';

export interface CallGuardOptions {
  /**
   * Who is calling and what they may do. An action's REAPI socket has a fixed caller (its
   * submitter's rights) and no needsOwner: its calls are never looked up by socket owner.
   */
  policy: Pick<AccessPolicy, 'identify' | 'refusal'> & Partial<Pick<AccessPolicy, 'needsOwner'>>;
  /** Who owns the other end of TCP connections (the policy needs it without tokens). */
  owners?: SocketOwners;
  /** Calls one client (token, else peer address) may have in flight at once; 0: no limit. */
  maxCallsPerClient: number;
  /**
   * A call is cut when nothing moves for this long: a request that does not arrive (a client
   * that sends headers, or part of an upload, and stops), or a download the client stopped
   * reading. Execute and WaitExecution are never cut once their request is in: the server
   * sends their updates, and HTTP/2 keepalive finds clients that are gone. 0: no timeout.
   */
  idleTimeoutMs: number;
  log: Logger;
}

/**
 * The HTTP/2 stream under a server call, found through grpc-js's private fields (the
 * innermost intercepting call holds it). Undefined if grpc-js changes them: calls are then
 * only ended with a status.
 */
function http2StreamOf(call: unknown): http2.ServerHttp2Stream | undefined {
  let c = call as { nextCall?: unknown; stream?: unknown } | undefined;
  for (let i = 0; c && i < 16; i++) {
    const stream = c.stream as http2.ServerHttp2Stream | undefined;
    if (stream && typeof stream.close === 'function' && 'rstCode' in stream) return stream;
    c = c.nextCall as typeof c;
  }
  return undefined;
}

/** Streams the server keeps alive by itself once the request is in (an update every 20 s). */
const NEVER_IDLE_AFTER_REQUEST = new Set(['/build.bazel.remote.execution.v2.Execution/Execute', '/build.bazel.remote.execution.v2.Execution/WaitExecution']);

interface Tracked {
  lastActivity: number;
  /** Whether silence counts now (see idleTimeoutMs). */
  watching: boolean;
  cut(): void;
}

/**
 * The server interceptor every call goes through: who is calling and may they (access
 * policy), how many calls they have in flight, and whether their call went idle. Refusals
 * end the call before any handler sees it; Remote Asset probes are let through first.
 */
export class CallGuard {
  private readonly inFlight = new Map<string, number>();
  private readonly tracked = new Set<Tracked>();
  private sweeper: NodeJS.Timeout | undefined;
  private readonly log: Logger;
  /** Owner lookups without per-connection caching, when the server gives us no connections. */
  private readonly fallbackOwners = new SocketOwners();

  constructor(private readonly opts: CallGuardOptions) {
    this.log = opts.log.child({ component: 'access' });
  }

  /** Watch a call for idleness; the sweep timer runs only while some call is watched. */
  private watch(t: Tracked): void {
    this.tracked.add(t);
    if (!this.sweeper) {
      this.sweeper = setInterval(() => this.sweep(), Math.max(100, Math.min(5000, Math.floor(this.opts.idleTimeoutMs / 4))));
      this.sweeper.unref();
    }
  }

  private unwatch(t: Tracked): void {
    this.tracked.delete(t);
    if (this.tracked.size === 0 && this.sweeper) {
      clearInterval(this.sweeper);
      this.sweeper = undefined;
    }
  }

  /** Calls in flight per client, for tests and the status view. */
  callsInFlight(): ReadonlyMap<string, number> {
    return this.inFlight;
  }

  private sweep(): void {
    const now = Date.now();
    for (const t of this.tracked) if (t.watching && now - t.lastActivity > this.opts.idleTimeoutMs) t.cut();
  }

  readonly interceptor: grpc.ServerInterceptor = (method, call) => {
    const path = method.path;
    const need = requirementOf(path);
    if (need === 'open') return new grpc.ServerInterceptingCall(call);
    const { policy, maxCallsPerClient, idleTimeoutMs } = this.opts;
    const conn = call.getConnectionInfo();
    const peer: Peer = { remoteAddress: conn.remoteAddress };
    const serverStreams = method.responseStream;
    /**
     * waiting: no metadata yet; identifying: looking up who owns the peer's socket (messages
     * wait); deferred: an asset method whose request decides; admitted; ended.
     */
    let state: 'waiting' | 'identifying' | 'deferred' | 'admitted' | 'ended' = 'waiting';
    let slot: string | undefined;
    let metadata: grpc.Metadata | undefined;
    /** What arrived while identifying, replayed in order once admitted. */
    const held: Array<() => void> = [];

    const tracked: Tracked = {
      lastActivity: Date.now(),
      watching: idleTimeoutMs > 0,
      cut: () => {
        const secs = Math.round(idleTimeoutMs / 1000);
        this.log.info(`cut an idle ${path}: nothing sent or received for ${secs} s`, { peer: call.getPeer() });
        end({ code: Code.DEADLINE_EXCEEDED, details: `the call was idle for ${secs} s (nothing sent or received) and the server ended it` }, { reset: true });
      },
    };
    if (tracked.watching) this.watch(tracked);
    const touch = (): void => {
      tracked.lastActivity = Date.now();
    };
    const release = (): void => {
      this.unwatch(tracked);
      if (slot !== undefined) {
        const n = (this.inFlight.get(slot) ?? 1) - 1;
        if (n <= 0) this.inFlight.delete(slot);
        else this.inFlight.set(slot, n);
        slot = undefined;
      }
    };
    const end = (status: { code: number; details: string }, opts: { reset?: boolean } = {}): void => {
      if (state === 'ended') return;
      state = 'ended';
      release();
      call.sendStatus({ ...status, metadata: new grpc.Metadata() });
      if (opts.reset) {
        // A status queues behind unsent data: a download the client stopped reading never
        // gets it through. Reset the stream if it is still open shortly after.
        const stream = http2StreamOf(call);
        if (stream) setTimeout(() => !stream.closed && stream.close(http2.constants.NGHTTP2_CANCEL), 500).unref();
      }
    };
    const refuse = (err: StatusError): void => {
      this.log.debug(`refused ${path}: ${err.message}`, { code: err.codeName, peer: call.getPeer() });
      end({ code: err.code, details: err.message });
    };
    /** Identify the caller, check the right and the per-client limit; false if refused. */
    const admit = (): boolean => {
      let caller: Caller;
      try {
        caller = policy.identify(metadata ?? new grpc.Metadata(), peer);
      } catch (err) {
        refuse(err instanceof StatusError ? err : new StatusError(Code.UNAUTHENTICATED, String(err)));
        return false;
      }
      const denied = policy.refusal(caller, need, path);
      if (denied) {
        refuse(denied);
        return false;
      }
      const n = this.inFlight.get(caller.name) ?? 0;
      if (maxCallsPerClient > 0 && n >= maxCallsPerClient) {
        this.log.warn(`refused ${path} from ${caller.name}: ${n} calls in flight already (limits.max-calls-per-client)`);
        refuse(new StatusError(Code.RESOURCE_EXHAUSTED, `too many calls in flight from this client (${n}; the server allows ${maxCallsPerClient}): retry when some have finished`));
        return false;
      }
      this.inFlight.set(caller.name, n + 1);
      slot = caller.name;
      state = 'admitted';
      return true;
    };
    /**
     * admit() once what the policy needs to know about the peer is known: at once, or (the
     * first call of a TCP connection, usually) after the socket-owner lookup, with what
     * arrives meanwhile held back. `then` runs only if the call is admitted.
     */
    const admitThen = (then: () => void): void => {
      const ends = policy.needsOwner?.(peer) ? tcpEnds(conn) : undefined;
      if (ends) peer.certificate = call.getAuthContext().sslPeerCertificate !== undefined;
      const owner = ends ? (this.opts.owners ?? this.fallbackOwners).ownerOf(ends) : undefined;
      if (!(owner instanceof Promise)) {
        peer.uid = owner;
        if (admit()) then();
        return;
      }
      state = 'identifying';
      owner.then(
        (uid) => {
          if (state === 'ended') return;
          peer.uid = uid;
          if (!admit()) return;
          then();
          for (const h of held.splice(0)) if ((state as string) !== 'ended') h();
        },
        (err: Error) => refuse(new StatusError(Code.UNAVAILABLE, `could not tell who owns this connection: ${err.message}`)),
      );
    };

    return new grpc.ServerInterceptingCall(call, {
      start: (next) =>
        next({
          onReceiveMetadata: (md, nextMd) => {
            if (state === 'ended') return;
            touch();
            metadata = md;
            // An asset probe must get INVALID_ARGUMENT whoever sends it: decide on the request.
            if (PROBE_METHODS.has(path)) {
              state = 'deferred';
              nextMd(md);
              return;
            }
            admitThen(() => nextMd(md));
          },
          onReceiveMessage: (message, nextMessage) => {
            if (state === 'ended') return;
            touch();
            if (state === 'identifying') {
              held.push(() => nextMessage(message));
              return;
            }
            if (state === 'deferred') {
              if (isAssetProbe(message)) state = 'admitted';
              else return admitThen(() => nextMessage(message));
            }
            nextMessage(message);
          },
          onReceiveHalfClose: (nextHalfClose) => {
            if (state === 'ended') return;
            touch();
            // The request is in. Unary and client-streaming calls are the server's to answer;
            // server streams stay watched (a client that stopped reading), except Execute.
            tracked.watching = idleTimeoutMs > 0 && serverStreams && !NEVER_IDLE_AFTER_REQUEST.has(path);
            if (!tracked.watching) this.unwatch(tracked);
            if (state === 'identifying') held.push(() => nextHalfClose());
            else nextHalfClose();
          },
          onCancel: () => {
            state = 'ended';
            release();
          },
        }),
      sendMessage: (message, nextSend) => {
        touch();
        nextSend(message);
      },
      sendStatus: (status, nextStatus) => {
        state = 'ended';
        release();
        nextStatus(status);
      },
    });
  };
}
