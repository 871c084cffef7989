import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call } from '../../src/client/reapi-client.js';
import { bytestream } from '../../src/proto.js';
import { actionCacheDefinition } from '../../src/services/action-cache-service.js';
import { fetchDefinition, pushDefinition } from '../../src/services/asset-service.js';
import { byteStreamDefinition } from '../../src/services/bytestream-service.js';
import { capabilitiesDefinition } from '../../src/services/capabilities-service.js';
import { casDefinition } from '../../src/services/cas-service.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { digestOf } from '../helpers/storage.js';

/** Every method of every storage service, with requests and responses as raw bytes. */
const SERVICES = { capabilitiesDefinition, casDefinition, byteStreamDefinition, actionCacheDefinition, fetchDefinition, pushDefinition };
const identity = (b: Buffer): Buffer => b;
const RAW: Record<string, grpc.ServiceDefinition> = Object.fromEntries(
  Object.entries(SERVICES).map(([name, def]) => [
    name,
    Object.fromEntries(
      Object.entries(def as Record<string, grpc.MethodDefinition<unknown, unknown>>).map(([m, md]) => [
        m,
        { ...md, requestSerialize: identity, requestDeserialize: identity, responseSerialize: identity, responseDeserialize: identity },
      ]),
    ),
  ]),
);

/** Pseudo-random bytes (deterministic). */
function noise(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    b[i] = x & 0xff;
  }
  return b;
}

/**
 * Payloads protobufjs refuses. (It is lenient: it clamps truncated strings and ignores wire
 * types of known fields, so most random bytes parse into some request.)
 */
const INVALID = [
  Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f]), // field 536870911, wire type 7
  Buffer.from([0xc3, 0x3e]), // field 1000, start group, never ended
  Buffer.from([0x80]), // truncated tag varint
  Buffer.from([0x0a]), // field 1, length missing
];
/** Payloads that may or may not parse. */
const RANDOM = [1, 2, 3, 5, 8, 64, 1000, 70_000].map((n, i) => noise(n, i + 1));

interface Outcome {
  code: number;
  details: string;
}

function unaryRaw(client: grpc.Client, path: string, payload: Buffer): Promise<Outcome> {
  return new Promise((resolve) => {
    client.makeUnaryRequest(path, identity, identity, payload, { deadline: Date.now() + 10_000 }, (err) => resolve({ code: err?.code ?? 0, details: err?.details ?? '' }));
  });
}

function serverStreamRaw(client: grpc.Client, path: string, payload: Buffer): Promise<Outcome> {
  return new Promise((resolve) => {
    const s = client.makeServerStreamRequest(path, identity, identity, payload, { deadline: Date.now() + 10_000 });
    s.on('data', () => undefined);
    s.on('status', (st: grpc.StatusObject) => resolve({ code: st.code, details: st.details }));
    s.on('error', () => undefined);
  });
}

function clientStreamRaw(client: grpc.Client, path: string, payloads: Buffer[]): Promise<Outcome> {
  return new Promise((resolve) => {
    const s = client.makeClientStreamRequest(path, identity, identity, { deadline: Date.now() + 10_000 }, (err) =>
      resolve({ code: err?.code ?? 0, details: err?.details ?? '' }),
    );
    s.on('error', () => undefined);
    for (const p of payloads) s.write(p);
    s.end();
  });
}

describe('garbage requests', () => {
  let d: TestDaemon;
  let client: grpc.Client;

  beforeAll(async () => {
    d = await startTestDaemon();
    client = new grpc.Client(d.address, grpc.credentials.createInsecure());
  });
  afterAll(async () => {
    client.close();
    await d.stop();
  });

  const stillServing = async (): Promise<void> => {
    const caps: any = await call(d.clients.capabilities, 'GetCapabilities', {});
    expect(caps.cacheCapabilities.digestFunctions).toContain(1);
    const blob = Buffer.from('still alive');
    const res: any = await call(d.clients.cas, 'BatchUpdateBlobs', { requests: [{ digest: digestOf(blob), data: blob }] });
    expect(res.responses[0].status?.code ?? 0).toBe(0);
  };

  for (const [service, def] of Object.entries(RAW)) {
    for (const [name, md] of Object.entries(def)) {
      it(`${service.replace('Definition', '')}.${name}: refuses unparseable bytes, survives random ones, keeps serving`, async () => {
        const send = (payload: Buffer): Promise<Outcome> => {
          if (md.requestStream) return clientStreamRaw(client, md.path, [payload, payload]);
          if (md.responseStream) return serverStreamRaw(client, md.path, payload);
          return unaryRaw(client, md.path, payload);
        };
        for (const payload of INVALID) {
          const out = await send(payload);
          expect(out.code, `${md.path} accepted ${payload.toString('hex')}`).not.toBe(0);
          expect(out.code).not.toBe(grpc.status.DEADLINE_EXCEEDED);
        }
        for (const payload of RANDOM) {
          const out = await send(payload);
          // Random bytes may happen to parse; what matters is a prompt, deliberate answer
          // (INTERNAL only from grpc-js failing to parse, never from a handler tripping over it).
          expect(out.code, `${md.path}: ${out.details}`).not.toBe(grpc.status.DEADLINE_EXCEEDED);
          expect(out.code, `${md.path}: ${out.details}`).not.toBe(grpc.status.UNKNOWN);
          if (out.code === grpc.status.INTERNAL) expect(out.details).toMatch(/^Error deserializing request/);
        }
        if (md.requestStream) {
          // A valid first message, then garbage.
          const blob = noise(100, 99);
          const ok = Buffer.from(
            bytestream.WriteRequest.encode({ resourceName: `uploads/u/blobs/${digestOf(blob).hash}/100`, writeOffset: 0, data: blob.subarray(0, 10) }).finish(),
          );
          const out = await clientStreamRaw(client, md.path, [ok, INVALID[2]!, ok]);
          expect(out.code).not.toBe(0);
          // The handler let go of the upload (QueryWriteStatus does not wait for a stuck stream).
          const t0 = Date.now();
          await call(d.clients.byteStream, 'QueryWriteStatus', { resourceName: `uploads/u/blobs/${digestOf(blob).hash}/100` }).catch(() => undefined);
          expect(Date.now() - t0).toBeLessThan(1000);
        }
        await stillServing();
      });
    }
  }

  it('survives semantically absurd but well-formed requests', async () => {
    const huge = { hash: 'a'.repeat(64), sizeBytes: Number.MAX_SAFE_INTEGER };
    const negative = { hash: 'a'.repeat(64), sizeBytes: -1 };
    const outs = await Promise.all([
      call(d.clients.cas, 'FindMissingBlobs', { blobDigests: [huge, negative] }).catch((e) => e),
      call(d.clients.cas, 'BatchReadBlobs', { digests: [huge] }).catch((e) => e),
      call(d.clients.cas, 'BatchUpdateBlobs', { requests: [{ digest: huge, data: Buffer.from('x') }, { digest: negative }] }).catch((e) => e),
      call(d.clients.actionCache, 'GetActionResult', { actionDigest: huge, inlineOutputFiles: ['a', ''] }).catch((e) => e),
      call(d.clients.actionCache, 'UpdateActionResult', { actionDigest: huge, actionResult: { outputDirectories: [{ path: 'x' }] } }).catch((e) => e),
      call(d.clients.fetch, 'FetchBlob', { uris: ['x'], oldestContentAccepted: { seconds: -1e15 }, digestFunction: 999 }).catch((e) => e),
      call(d.clients.push, 'PushDirectory', { uris: ['x'], rootDirectoryDigest: huge, expireAt: { seconds: 1e15 }, digestFunction: 42 }).catch((e) => e),
      call(d.clients.byteStream, 'QueryWriteStatus', { resourceName: 'uploads/u/blobs/' + 'a'.repeat(64) + '/9007199254740991' }).catch((e) => e),
    ]);
    for (const o of outs) expect(o?.code, o?.details).not.toBe(grpc.status.UNKNOWN);
    await new Promise<void>((resolve) => {
      const s = d.clients.cas.GetTree({ rootDigest: huge, pageSize: -5, pageToken: 'x' });
      s.on('data', () => undefined);
      s.on('error', () => resolve());
      s.on('end', () => resolve());
    });
    await new Promise<void>((resolve) => {
      const s = d.clients.byteStream.Read({ resourceName: `blobs/${huge.hash}/${huge.sizeBytes}`, readOffset: 2 ** 52, readLimit: 2 ** 52 });
      s.on('data', () => undefined);
      s.on('error', () => resolve());
      s.on('end', () => resolve());
    });
    await stillServing();
  });
});
