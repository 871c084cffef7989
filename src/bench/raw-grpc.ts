import * as grpc from '@grpc/grpc-js';
import { bindAddress, createGrpcServer } from '../daemon/grpc-server.js';

/**
 * The baseline of the storage suites: a bare grpc-js server and client in this process, with
 * identity serializers (raw Buffers, no protobuf), the same 16 MiB HTTP/2 windows on both ends
 * as reexec's server and client, and the same message sizes as the REAPI calls they stand for.
 * What reexec adds on top (protobuf, hashing, storage, fsync) shows as the ratio to these.
 */

const identity = (b: Buffer): Buffer => b;

function rawMethod(name: string, requestStream: boolean, responseStream: boolean): grpc.MethodDefinition<Buffer, Buffer> {
  return {
    path: `/reexec.bench.Raw/${name}`,
    originalName: name,
    requestStream,
    responseStream,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  };
}

const rawDefinition = {
  /** Client stream of chunks; answers with the byte count (8 bytes, big-endian). */
  Upload: rawMethod('Upload', true, false),
  /** Server stream of a slice of the payload the bench set, in chunks; the request says the chunk size and the slice. */
  Download: rawMethod('Download', false, true),
  /**
   * Unary: the request is the length of the answer (8 bytes, big-endian) and a payload; the
   * answer has that many bytes. Shaped like the call it stands for (a large request and a small
   * answer for an upload, the reverse for a download), not an echo: large messages in both
   * directions at once can stall two HTTP/2 peers in one process, each waiting to write before
   * it reads.
   */
  RoundTrip: rawMethod('RoundTrip', false, false),
};

const RawClient = grpc.makeGenericClientConstructor(rawDefinition, 'Raw');

export const WINDOW_BYTES = 16 * 1024 * 1024;

/** The channel options of reexec's client (src/client/reapi-client.ts), used for the baseline too. */
export const CLIENT_CHANNEL_OPTIONS: grpc.ChannelOptions = {
  'grpc.max_receive_message_length': 64 * 1024 * 1024,
  'grpc-node.flow_control_window': WINDOW_BYTES,
};

/** Write `chunks` to a client stream, waiting for 'drain' whenever the stream says to. */
export function pumpWrites<T>(call: grpc.ClientWritableStream<T>, count: number, make: (i: number) => T, done: () => boolean): void {
  let i = 0;
  const pump = (): void => {
    while (i < count) {
      if (done()) return;
      const ok = call.write(make(i++));
      if (!ok) {
        call.once('drain', pump);
        return;
      }
    }
    call.end();
  };
  pump();
}

export class RawGrpcBaseline {
  /** What Download streams; set before each measurement. */
  private payload: Buffer = Buffer.alloc(0);

  private constructor(
    private readonly server: grpc.Server,
    private readonly client: grpc.Client & Record<string, any>,
  ) {}

  static async start(): Promise<RawGrpcBaseline> {
    const server = createGrpcServer({ maxReceiveMessageBytes: 64 * 1024 * 1024, flowControlWindowBytes: WINDOW_BYTES });
    let self: RawGrpcBaseline | undefined;
    server.addService(rawDefinition, {
      Upload: (call: grpc.ServerReadableStream<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
        let bytes = 0;
        call.on('data', (chunk: Buffer) => (bytes += chunk.byteLength));
        call.on('error', () => undefined);
        call.on('end', () => {
          const res = Buffer.alloc(8);
          res.writeBigUInt64BE(BigInt(bytes));
          callback(null, res);
        });
      },
      Download: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
        // The request: chunk size, then the offset and length of the slice of the payload to send.
        const chunk = Number(call.request.readBigUInt64BE(0));
        const start = Number(call.request.readBigUInt64BE(8));
        const data = self!.payload.subarray(start, start + Number(call.request.readBigUInt64BE(16)));
        let off = 0;
        const pump = (): void => {
          while (off < data.byteLength) {
            if (call.cancelled) return;
            const piece = data.subarray(off, Math.min(data.byteLength, off + chunk));
            off += piece.byteLength;
            if (!call.write(piece)) {
              call.once('drain', pump);
              return;
            }
          }
          call.end();
        };
        pump();
      },
      RoundTrip: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => callback(null, self!.answer(Number(call.request.readBigUInt64BE(0)))),
    });
    const address = await bindAddress(server, '127.0.0.1:0');
    const client = new RawClient(address, grpc.credentials.createInsecure(), CLIENT_CHANNEL_OPTIONS) as grpc.Client & Record<string, any>;
    self = new RawGrpcBaseline(server, client);
    return self;
  }

  /** Stream `data` to the server in `chunk`-byte messages; resolves with the bytes it counted. */
  upload(data: Buffer, chunk: number): Promise<number> {
    return new Promise((resolve, reject) => {
      let finished = false;
      const call = this.client['Upload']((err: grpc.ServiceError | null, res: Buffer) => {
        finished = true;
        if (err) reject(err);
        else resolve(Number(res.readBigUInt64BE(0)));
      }) as grpc.ClientWritableStream<Buffer>;
      const count = Math.ceil(data.byteLength / chunk);
      pumpWrites(call, count, (i) => data.subarray(i * chunk, Math.min(data.byteLength, (i + 1) * chunk)), () => finished);
    });
  }

  /** What download() streams slices of (so that parallel downloads can share one buffer). */
  setPayload(data: Buffer): void {
    this.payload = data;
  }

  /** Have the server stream the payload's `length` bytes at `offset` back in `chunk`-byte messages; resolves with the bytes received. */
  download(offset: number, length: number, chunk: number): Promise<number> {
    const req = Buffer.alloc(24);
    req.writeBigUInt64BE(BigInt(chunk), 0);
    req.writeBigUInt64BE(BigInt(offset), 8);
    req.writeBigUInt64BE(BigInt(length), 16);
    return new Promise((resolve, reject) => {
      let bytes = 0;
      const call = this.client['Download'](req) as grpc.ClientReadableStream<Buffer>;
      call.on('data', (b: Buffer) => (bytes += b.byteLength));
      call.on('error', reject);
      call.on('end', () => resolve(bytes));
    });
  }

  /** The bytes a RoundTrip answers with (zeros, allocated once per size). */
  private answers = new Map<number, Buffer>();
  private answer(bytes: number): Buffer {
    let a = this.answers.get(bytes);
    if (!a) this.answers.set(bytes, (a = Buffer.alloc(bytes)));
    return a;
  }

  /** A RoundTrip request: `requestBytes` bytes of payload (plus 8), to be answered with `answerBytes`. Made before the clock starts. */
  static roundTripRequest(requestBytes: number, answerBytes: number): Buffer {
    const req = Buffer.alloc(8 + requestBytes);
    req.writeBigUInt64BE(BigInt(answerBytes), 0);
    return req;
  }

  /** A unary RoundTrip; resolves with the answer's size. */
  roundTrip(request: Buffer): Promise<number> {
    return new Promise((resolve, reject) => {
      this.client['RoundTrip'](request, (err: grpc.ServiceError | null, res: Buffer) => (err ? reject(err) : resolve(res.byteLength)));
    });
  }

  async close(): Promise<void> {
    this.payload = Buffer.alloc(0);
    this.answers.clear();
    this.client.close();
    await new Promise<void>((resolve) => this.server.tryShutdown(() => resolve()));
  }
}
