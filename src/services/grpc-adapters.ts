import * as grpc from '@grpc/grpc-js';
import { rpc, protobuf } from '../proto.js';
import { toRpcStatus } from '../util/rpc-status.js';
import type { Logger } from '../util/logger.js';
import { noteReceived, noteSent } from '../metrics/message-bytes.js';
import { asStatusError, Code, StatusError } from '../util/status-error.js';

/** What protobufjs generates for every message type. */
export interface MessageType<T> {
  encode(message: T): { finish(): Uint8Array };
  decode(reader: Uint8Array): T;
}

function toBuffer(u: Uint8Array): Buffer {
  return Buffer.isBuffer(u) ? u : Buffer.from(u.buffer, u.byteOffset, u.byteLength);
}

/** A grpc-js method definition backed by generated static code (no runtime .proto loading). */
export function method<Req, Res>(
  service: string,
  name: string,
  requestType: MessageType<Req>,
  responseType: MessageType<Res>,
  streams: { request?: boolean; response?: boolean } = {},
): grpc.MethodDefinition<Req, Res> {
  return {
    path: `/${service}/${name}`,
    originalName: name,
    requestStream: streams.request ?? false,
    responseStream: streams.response ?? false,
    requestSerialize: (m: Req) => toBuffer(requestType.encode(m).finish()),
    // Sizes noted for the RPC metrics (bytes in and out per method).
    requestDeserialize: (b: Buffer) => noteReceived(requestType.decode(b), b.byteLength),
    responseSerialize: (m: Res) => {
      const b = toBuffer(responseType.encode(m).finish());
      noteSent(m, b.byteLength);
      return b;
    },
    responseDeserialize: (b: Buffer) => responseType.decode(b),
  };
}

export const OK_STATUS: rpc.IStatus = { code: Code.OK, message: '' };

/** A call's error: code, message, and the details in grpc-status-details-bin as REAPI clients read them. */
export function toServiceError(err: unknown): Partial<grpc.ServiceError> {
  const se = asStatusError(err);
  const metadata = new grpc.Metadata();
  const status = toRpcStatus(se);
  if (status.details && status.details.length > 0) {
    metadata.set('grpc-status-details-bin', toBuffer(rpc.Status.encode(status).finish()));
  }
  return { code: se.code, details: se.message, metadata };
}

export interface CallContext {
  log: Logger;
  /** The peer, for logs and per-client accounting. */
  peer: string;
  metadata: grpc.Metadata;
  /** Resolves when the client goes away. */
  cancelled: () => boolean;
  /** The call's deadline (ms since the epoch), Infinity without one. */
  deadline?: number;
  /** Aborted when the client cancels the call or goes away. */
  signal?: AbortSignal;
}

function deadlineMs(d: grpc.Deadline): number {
  if (d instanceof Date) return d.getTime();
  return typeof d === 'number' && Number.isFinite(d) ? d : Number.POSITIVE_INFINITY;
}

function contextOf(call: grpc.ServerUnaryCall<unknown, unknown> | grpc.ServerReadableStream<unknown, unknown> | grpc.ServerWritableStream<unknown, unknown>, log: Logger, name: string): CallContext {
  return {
    log: log.child({ rpc: name }),
    peer: call.getPeer(),
    metadata: call.metadata,
    cancelled: () => call.cancelled,
    deadline: deadlineMs(call.getDeadline()),
    get signal(): AbortSignal {
      const ac = new AbortController();
      if (call.cancelled) ac.abort();
      else (call as unknown as NodeJS.EventEmitter).once('cancelled', () => ac.abort());
      return ac.signal;
    },
  };
}

function logFailure(log: Logger, name: string, err: unknown): void {
  const se = asStatusError(err);
  if (se.code === Code.INTERNAL || se.code === Code.UNKNOWN) {
    log.error(`${name} failed`, { code: se.codeName, error: se.message, stack: err instanceof Error ? err.stack : undefined });
  } else {
    log.debug(`${name} refused`, { code: se.codeName, error: se.message });
  }
}

/**
 * Adapters from async handlers to grpc-js callbacks. grpc-js never awaits what a handler
 * returns, so a rejected promise would be an unhandled rejection: these await the work and
 * turn any error into the call's status.
 */
export function unary<Req, Res>(log: Logger, name: string, fn: (req: Req, ctx: CallContext) => Promise<Res>): grpc.handleUnaryCall<Req, Res> {
  return (call, callback) => {
    const ctx = contextOf(call, log, name);
    fn(call.request, ctx).then(
      (res) => callback(null, res),
      (err) => {
        logFailure(ctx.log, name, err);
        callback(toServiceError(err));
      },
    );
  };
}

/** A writer for server-streaming handlers that respects HTTP/2 flow control. */
export interface StreamWriter<Res> {
  write(message: Res): Promise<void>;
}

export function serverStream<Req, Res>(
  log: Logger,
  name: string,
  fn: (req: Req, out: StreamWriter<Res>, ctx: CallContext) => Promise<void>,
): grpc.handleServerStreamingCall<Req, Res> {
  return (call) => {
    const ctx = contextOf(call, log, name);
    const out: StreamWriter<Res> = {
      write: (message) =>
        new Promise<void>((resolve, reject) => {
          if (call.cancelled) return reject(new StatusError(Code.CANCELLED, 'the client cancelled the call'));
          if (call.write(message)) return resolve();
          const onDrain = (): void => {
            call.off('cancelled', onCancel);
            resolve();
          };
          const onCancel = (): void => {
            call.off('drain', onDrain);
            reject(new StatusError(Code.CANCELLED, 'the client cancelled the call'));
          };
          call.once('drain', onDrain);
          call.once('cancelled', onCancel);
        }),
    };
    fn(call.request, out, ctx).then(
      () => call.end(),
      (err) => {
        if (call.cancelled) return;
        logFailure(ctx.log, name, err);
        call.emit('error', toServiceError(err));
      },
    );
  };
}

export function clientStream<Req, Res>(
  log: Logger,
  name: string,
  fn: (requests: AsyncIterable<Req>, ctx: CallContext) => Promise<Res>,
): grpc.handleClientStreamingCall<Req, Res> {
  return (call, callback) => {
    const ctx = contextOf(call, log, name);
    // A cancelled call must end the handler's loop over the requests, or it waits forever.
    call.once('cancelled', () => call.destroy(new StatusError(Code.CANCELLED, 'the client cancelled the call')));
    fn(call as AsyncIterable<Req>, ctx).then(
      (res) => callback(null, res),
      (err) => {
        logFailure(ctx.log, name, err);
        callback(toServiceError(err));
      },
    );
  };
}

export const Empty = protobuf.Empty;
