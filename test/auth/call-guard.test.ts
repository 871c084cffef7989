import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AccessPolicy } from '../../src/auth/access-policy.js';
import { CallGuard } from '../../src/auth/call-guard.js';
import { ALL_RIGHTS, type Right } from '../../src/auth/rights.js';
import { SocketOwners } from '../../src/auth/socket-owners.js';
import { createGrpcServer } from '../../src/daemon/grpc-server.js';
import { silentLogger } from '../../src/util/logger.js';

const raw = { serialize: (b: Buffer) => b, deserialize: (b: Buffer) => b };
const service = {
  Echo: { path: '/test.Echo/Echo', requestStream: false, responseStream: false, requestSerialize: raw.serialize, requestDeserialize: raw.deserialize, responseSerialize: raw.serialize, responseDeserialize: raw.deserialize },
  Concat: { path: '/test.Echo/Concat', requestStream: true, responseStream: false, requestSerialize: raw.serialize, requestDeserialize: raw.deserialize, responseSerialize: raw.serialize, responseDeserialize: raw.deserialize },
} as const;

/**
 * The guard without per-connection tracking (a server that reports no connections): every
 * call waits for its own asynchronous socket-owner lookup before its metadata goes on, and
 * gets every request message, in order, once the caller is admitted.
 */
describe('CallGuard without connection tracking', () => {
  let server: grpc.Server;
  let client: grpc.Client & Record<string, (...a: unknown[]) => unknown>;

  beforeAll(async () => {
    const guard = new CallGuard({ policy: new AccessPolicy(undefined), maxCallsPerClient: 0, idleTimeoutMs: 0, log: silentLogger });
    server = createGrpcServer({ maxReceiveMessageBytes: 4 << 20, flowControlWindowBytes: 65535 }, [guard.interceptor]);
    server.addService(service as unknown as grpc.ServiceDefinition, {
      Echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => cb(null, call.request),
      Concat: (call: grpc.ServerReadableStream<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
        const parts: Buffer[] = [];
        call.on('data', (b: Buffer) => parts.push(b));
        call.on('end', () => cb(null, Buffer.concat(parts)));
      },
    });
    const port = await new Promise<number>((res, rej) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))));
    const Client = grpc.makeGenericClientConstructor(service as unknown as grpc.ServiceDefinition, 'Echo');
    client = new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as typeof client;
  });
  afterAll(() => {
    client?.close();
    server?.forceShutdown();
  });

  it("admits the daemon's own user on each call, unary or streaming, with every message in order", async () => {
    for (let i = 0; i < 3; i++) {
      const echo = await new Promise<Buffer>((res, rej) => client.Echo(Buffer.from(`hello ${i}`), (e: Error | null, r: Buffer) => (e ? rej(e) : res(r))));
      expect(echo.toString()).toBe(`hello ${i}`);
      const concat = await new Promise<Buffer>((res, rej) => {
        const s = client.Concat((e: Error | null, r: Buffer) => (e ? rej(e) : res(r))) as grpc.ClientWritableStream<Buffer>;
        for (let n = 0; n < 50; n++) s.write(Buffer.from(`${n},`));
        s.end();
      });
      expect(concat.toString()).toBe(Array.from({ length: 50 }, (_, n) => `${n},`).join(''));
    }
  });
});

/**
 * An action's REAPI socket has one fixed caller, the submitter's rights (its policy has no
 * needsOwner): its calls come from inside a sandbox running as the run-as user, and are never
 * looked up by socket owner, whatever transport they arrive on.
 */
describe("CallGuard with a fixed caller (an action's REAPI socket)", () => {
  let server: grpc.Server;
  let port: number;
  let lookups = 0;
  const rights = { current: new Set<Right>(ALL_RIGHTS) };

  beforeAll(async () => {
    const count = (): string => {
      lookups++;
      return '';
    };
    const owners = new SocketOwners(async () => count(), count);
    const plain = new AccessPolicy(undefined);
    const guard = new CallGuard({
      policy: { identify: () => ({ name: 'the action of execution x', rights: rights.current }), refusal: (c, need, path) => plain.refusal(c, need, path) },
      owners,
      maxCallsPerClient: 0,
      idleTimeoutMs: 0,
      log: silentLogger,
    });
    // TCP on purpose: the daemon's own policy would look this peer up.
    server = createGrpcServer({ maxReceiveMessageBytes: 4 << 20, flowControlWindowBytes: 65535 }, [guard.interceptor]);
    server.addService(service as unknown as grpc.ServiceDefinition, {
      Echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => cb(null, call.request),
      Concat: (_call: grpc.ServerReadableStream<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => cb(null, Buffer.alloc(0)),
    });
    port = await new Promise<number>((res, rej) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))));
  });
  afterAll(() => server?.forceShutdown());

  it('admits by the fixed caller\'s rights and never asks who owns the connection', async () => {
    const Client = grpc.makeGenericClientConstructor(service as unknown as grpc.ServiceDefinition, 'Echo');
    const client = new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as grpc.Client & Record<string, (...a: unknown[]) => unknown>;
    try {
      const echo = await new Promise<Buffer>((res, rej) => client.Echo(Buffer.from('hi'), (e: Error | null, r: Buffer) => (e ? rej(e) : res(r))));
      expect(echo.toString()).toBe('hi');
      // The rights still decide: a test method needs "admin", which a read-only submitter lacks.
      rights.current = new Set<Right>(['read']);
      const refused = await new Promise<grpc.ServiceError>((res) => client.Echo(Buffer.from('hi'), (e: grpc.ServiceError | null) => res(e!)));
      expect(refused.code).toBe(grpc.status.PERMISSION_DENIED);
      expect(lookups).toBe(0);
    } finally {
      client.close();
    }
  });
});
