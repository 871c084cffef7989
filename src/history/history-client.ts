import * as grpc from '@grpc/grpc-js';
import { channelCredentials, securityChannelOptions, type ClientSecurity } from '../client/client-security.js';
import { clientConstructors, grpcTarget } from '../client/reapi-client.js';
import type { reexec } from '../gen/proto.js';
import { AdminRefusedError, DaemonUnreachableError, NotReexecError, unreachableReason } from '../client/daemon-errors.js';
import type { HistoryEntry } from './entry.js';
import { entryFromWire } from './wire.js';

/** The daemon records no history (history.enabled: false), or does not know this reference. */
export class HistoryRequestError extends Error {
  constructor(
    message: string,
    readonly code: grpc.status,
  ) {
    super(message);
    this.name = 'HistoryRequestError';
  }
}

/** A call's error as one the CLI reports: not running, not reexec, refused, or the daemon's own message. */
export function historyError(endpoint: string, err: grpc.ServiceError): Error {
  if (err.code === grpc.status.UNAVAILABLE) return new DaemonUnreachableError(endpoint, unreachableReason(err.details ?? ''));
  if (err.code === grpc.status.DEADLINE_EXCEEDED && /No connection|Waiting for LB|connect/i.test(err.details)) return new DaemonUnreachableError(endpoint, 'no answer');
  if (err.code === grpc.status.UNIMPLEMENTED && !/history/i.test(err.details)) return new NotReexecError(endpoint);
  if (err.code === grpc.status.UNAUTHENTICATED || err.code === grpc.status.PERMISSION_DENIED) return new AdminRefusedError(endpoint, err.details);
  return new HistoryRequestError(err.details || err.message, err.code);
}

/** The History service of a daemon's Admin API, as `reexec history|show|explain|shell` and the dashboard use it. */
export class HistoryClient {
  private readonly client: grpc.Client & Record<string, any>;

  constructor(
    readonly endpoint: string,
    security: ClientSecurity = {},
  ) {
    this.client = new clientConstructors.history(grpcTarget(endpoint), channelCredentials(endpoint, security), {
      'grpc.max_receive_message_length': 64 * 1024 * 1024,
      'grpc.initial_reconnect_backoff_ms': 200,
      'grpc.max_reconnect_backoff_ms': 1000,
      ...securityChannelOptions(security),
    }) as grpc.Client & Record<string, any>;
  }

  private unary<Req, Res>(method: string, req: Req, timeoutMs = 120_000): Promise<Res> {
    return new Promise((resolve, reject) => {
      this.client[method](req, new grpc.Metadata(), { deadline: new Date(Date.now() + timeoutMs) }, (err: grpc.ServiceError | null, res: Res) =>
        err ? reject(historyError(this.endpoint, err)) : resolve(res),
      );
    });
  }

  /** Entries as ListHistory sends them (pages), without watching. */
  async list(req: reexec.admin.v1.IListHistoryRequest): Promise<HistoryEntry[]> {
    const out: HistoryEntry[] = [];
    await this.follow({ ...req, watch: false }, (e) => void out.push(e)).done;
    return out;
  }

  /** Stream ListHistory: `onEntry` for each entry; `cancel()` ends a watch (done then resolves). */
  follow(req: reexec.admin.v1.IListHistoryRequest, onEntry: (e: HistoryEntry) => void): { done: Promise<void>; cancel(): void } {
    const stream: grpc.ClientReadableStream<reexec.admin.v1.HistoryPage> = this.client['ListHistory'](req, new grpc.Metadata(), req.watch ? {} : { deadline: new Date(Date.now() + 120_000) });
    let cancelled = false;
    const done = new Promise<void>((resolve, reject) => {
      stream.on('data', (page: reexec.admin.v1.HistoryPage) => {
        for (const e of page.entries) onEntry(entryFromWire(e));
      });
      stream.on('error', (err: grpc.ServiceError) => (cancelled && err.code === grpc.status.CANCELLED ? resolve() : reject(historyError(this.endpoint, err))));
      stream.on('end', () => resolve());
    });
    return {
      done,
      cancel: () => {
        cancelled = true;
        stream.cancel();
      },
    };
  }

  show(ref: string, tailBytes = 0): Promise<reexec.admin.v1.ActionDetails> {
    return this.unary('ShowAction', { ref, tailBytes });
  }

  explain(ref: string, against?: string): Promise<reexec.admin.v1.Explanation> {
    return this.unary('ExplainAction', { ref, against: against ?? '' });
  }

  prepareShell(ref: string): Promise<reexec.admin.v1.ShellPlan> {
    return this.unary('PrepareShell', { ref });
  }

  /** The whole stdout or stderr of an action, chunk by chunk. */
  readLog(ref: string, stream: 'stdout' | 'stderr', onChunk: (data: Uint8Array) => void): Promise<void> {
    return new Promise((resolve, reject) => {
      const s: grpc.ClientReadableStream<reexec.admin.v1.LogChunk> = this.client['ReadActionLog']({ ref, stream }, new grpc.Metadata());
      s.on('data', (c: reexec.admin.v1.LogChunk) => onChunk(c.data));
      s.on('error', (err: grpc.ServiceError) => reject(historyError(this.endpoint, err)));
      s.on('end', () => resolve());
    });
  }

  close(): void {
    this.client.close();
  }
}
