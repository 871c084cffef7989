import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call } from '../../src/client/reapi-client.js';
import { Digest } from '../../src/digest/digest.js';
import { bytestream, re } from '../../src/proto.js';
import { actionCacheDefinition } from '../../src/services/action-cache-service.js';
import { adminDefinition } from '../../src/services/admin-service.js';
import { fetchDefinition, pushDefinition } from '../../src/services/asset-service.js';
import { byteStreamDefinition } from '../../src/services/bytestream-service.js';
import { capabilitiesDefinition } from '../../src/services/capabilities-service.js';
import { casDefinition } from '../../src/services/cas-service.js';
import { executionDefinition, operationsDefinition } from '../../src/services/execution-service.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { digestOf } from '../helpers/storage.js';
import { caseTally } from './tally.js';

/**
 * Hostile bytes for every RPC the daemon serves: payloads protobufjs refuses, random bytes,
 * and (below) valid requests mutated at random. Bounded: a fixed number of cases per method,
 * each with a 10 s deadline; the file prints how many it sent.
 */
const SERVICES = {
  capabilitiesDefinition,
  casDefinition,
  byteStreamDefinition,
  actionCacheDefinition,
  fetchDefinition,
  pushDefinition,
  executionDefinition,
  operationsDefinition,
  adminDefinition,
};
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

/** Mutations per method of a valid request. */
const MUTATIONS = 60;

/** A small deterministic PRNG (xorshift32). */
function prng(seed: number): () => number {
  let x = (seed * 2654435761) >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 4294967296;
  };
}

/** One random change to an encoded message: bit flips, truncation, insertions, corrupt lengths. */
function mutate(seed: Buffer, rnd: () => number): Buffer {
  const at = (n: number): number => Math.floor(rnd() * n);
  const b = Buffer.from(seed);
  switch (at(8)) {
    case 0:
      if (b.length) b[at(b.length)]! ^= 1 << at(8);
      return b;
    case 1:
      if (b.length) b[at(b.length)] = at(256);
      return b;
    case 2:
      return b.subarray(0, at(b.length + 1));
    case 3: {
      const i = at(b.length + 1);
      return Buffer.concat([b.subarray(0, i), Buffer.from(Array.from({ length: 1 + at(16) }, () => at(256))), b.subarray(i)]);
    }
    case 4: {
      const i = at(b.length + 1);
      const j = Math.min(b.length, i + 1 + at(32));
      return Buffer.concat([b.subarray(0, j), b.subarray(i, j), b.subarray(j)]);
    }
    case 5: {
      // A length prefix that claims far more than follows.
      const i = at(b.length + 1);
      return Buffer.concat([b.subarray(0, i), Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]), b.subarray(i)]);
    }
    case 6:
      // A field with a random number and wire type appended.
      return Buffer.concat([b, Buffer.from([at(256) | 0x08, at(128), at(256)])]);
    default:
      // The same message twice (protobuf merges repeated fields, the last scalar wins).
      return Buffer.concat([b, b]);
  }
}

describe('hostile RPCs: unparseable, random and mutated requests to every method', () => {
  const tally = caseTally('fuzzed RPCs');
  let d: TestDaemon;
  let client: grpc.Client;
  /** A valid request per "service.method", encoded, that refers to content the daemon holds. */
  const seeds: Record<string, Buffer[]> = {};

  beforeAll(async () => {
    d = await startTestDaemon();
    client = new grpc.Client(d.address, grpc.credentials.createInsecure());
    const put = async (data: Uint8Array): Promise<re.IDigest> => {
      const digest = Digest.compute(data).toProto();
      await call(d.clients.cas, 'BatchUpdateBlobs', { requests: [{ digest, data }] });
      return digest;
    };
    const blob = await put(Buffer.from('a blob the fuzzer can point at'));
    const sub = await put(re.Directory.encode({ files: [{ name: 'f', digest: blob }] }).finish());
    const dir = await put(re.Directory.encode({ directories: [{ name: 'sub', digest: sub }], symlinks: [{ name: 'l', target: 'sub/f' }] }).finish());
    const command = await put(re.Command.encode({ arguments: ['true'], outputPaths: ['out'] }).finish());
    const action = await put(re.Action.encode({ commandDigest: command, inputRootDigest: dir, doNotCache: true }).finish());
    const enc = <T>(md: grpc.MethodDefinition<T, unknown>, req: T): Buffer => md.requestSerialize(req);
    const cas = casDefinition;
    const all: Record<string, Array<[grpc.MethodDefinition<any, any>, unknown]>> = {
      'capabilitiesDefinition.GetCapabilities': [[capabilitiesDefinition.GetCapabilities, { instanceName: '' }]],
      'casDefinition.FindMissingBlobs': [[cas.FindMissingBlobs, { blobDigests: [blob, dir, digestOf(Buffer.alloc(0))] }]],
      'casDefinition.BatchUpdateBlobs': [[cas.BatchUpdateBlobs, { requests: [{ digest: blob, data: Buffer.from('a blob the fuzzer can point at') }] }]],
      'casDefinition.BatchReadBlobs': [[cas.BatchReadBlobs, { digests: [blob, sub] }]],
      'casDefinition.GetTree': [[cas.GetTree, { rootDigest: dir, pageSize: 1 }]],
      'casDefinition.SplitBlob': [[cas.SplitBlob, { blobDigest: blob }]],
      'casDefinition.SpliceBlob': [[cas.SpliceBlob, { blobDigest: blob, chunkDigests: [blob] }]],
      'byteStreamDefinition.Read': [[byteStreamDefinition.Read, { resourceName: `blobs/${blob.hash}/${blob.sizeBytes}`, readOffset: 2, readLimit: 5 }]],
      'byteStreamDefinition.Write': [
        [byteStreamDefinition.Write, { resourceName: `uploads/3f0c5a52-1d0e-4f7c-9d54-0b1e6b3d2a11/blobs/${blob.hash}/${blob.sizeBytes}`, writeOffset: 0, data: Buffer.from('a blob the fuzzer can point at'), finishWrite: true }],
      ],
      'byteStreamDefinition.QueryWriteStatus': [[byteStreamDefinition.QueryWriteStatus, { resourceName: `uploads/u/blobs/${blob.hash}/${blob.sizeBytes}` }]],
      'actionCacheDefinition.GetActionResult': [[actionCacheDefinition.GetActionResult, { actionDigest: action, inlineStdout: true, inlineOutputFiles: ['out'] }]],
      'actionCacheDefinition.UpdateActionResult': [
        [actionCacheDefinition.UpdateActionResult, { actionDigest: blob, actionResult: { exitCode: 0, stdoutDigest: blob, outputFiles: [{ path: 'out', digest: blob }], outputDirectories: [{ path: 'd', treeDigest: dir }] } }],
      ],
      'fetchDefinition.FetchBlob': [[fetchDefinition.FetchBlob, { uris: ['urn:fdc:fuzz:blob'], qualifiers: [{ name: 'q', value: 'v' }], oldestContentAccepted: { seconds: 1 } }]],
      'fetchDefinition.FetchDirectory': [[fetchDefinition.FetchDirectory, { uris: ['urn:fdc:fuzz:dir'] }]],
      'pushDefinition.PushBlob': [[pushDefinition.PushBlob, { uris: ['urn:fdc:fuzz:blob'], qualifiers: [{ name: 'q', value: 'v' }], blobDigest: blob, referencesBlobs: [blob], referencesDirectories: [dir] }]],
      'pushDefinition.PushDirectory': [[pushDefinition.PushDirectory, { uris: ['urn:fdc:fuzz:dir'], rootDirectoryDigest: dir, expireAt: { seconds: 4102444800 } }]],
      'executionDefinition.Execute': [[executionDefinition.Execute, { actionDigest: action, skipCacheLookup: true }]],
      'executionDefinition.WaitExecution': [[executionDefinition.WaitExecution, { name: 'operations/not-one-of-ours' }]],
      'operationsDefinition.ListOperations': [[operationsDefinition.ListOperations, { pageSize: 2 }]],
      'operationsDefinition.GetOperation': [[operationsDefinition.GetOperation, { name: 'operations/not-one-of-ours' }]],
      'operationsDefinition.DeleteOperation': [[operationsDefinition.DeleteOperation, { name: 'operations/not-one-of-ours' }]],
      'operationsDefinition.CancelOperation': [[operationsDefinition.CancelOperation, { name: 'operations/not-one-of-ours' }]],
      'operationsDefinition.WaitOperation': [[operationsDefinition.WaitOperation, { name: 'operations/not-one-of-ours', timeout: { nanos: 1e6 } }]],
      'adminDefinition.GetStatus': [[adminDefinition.GetStatus, {}]],
      'adminDefinition.CollectGarbage': [[adminDefinition.CollectGarbage, { dryRun: true, targetBytes: 1 }]],
    };
    for (const [k, list] of Object.entries(all)) seeds[k] = list.map(([md, req]) => enc(md, req));
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
        tally.add(INVALID.length + RANDOM.length);
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
        // Valid requests, mutated at random: they get past parsing into the handlers' logic.
        const seedList = seeds[`${service}.${name}`];
        expect(seedList, `a seed request for ${service}.${name}`).toBeDefined();
        const rnd = prng(name.length * 7919 + service.length);
        for (let i = 0; i < MUTATIONS; i++) {
          const payload = mutate(seedList![i % seedList!.length]!, rnd);
          const out = await send(payload);
          tally.add();
          expect(out.code, `${md.path} <- ${payload.toString('hex').slice(0, 200)}: ${out.details}`).not.toBe(grpc.status.DEADLINE_EXCEEDED);
          expect(out.code, `${md.path} <- ${payload.toString('hex').slice(0, 200)}: ${out.details}`).not.toBe(grpc.status.UNKNOWN);
          if (out.code === grpc.status.INTERNAL) expect(out.details, `${md.path} <- ${payload.toString('hex').slice(0, 200)}`).toMatch(/^Error deserializing request/);
        }
        if (md.requestStream) {
          // A valid first message, then garbage.
          tally.add();
          const blob = noise(100, 99);
          const ok = Buffer.from(
            bytestream.WriteRequest.encode({ resourceName: `uploads/u/blobs/${digestOf(blob).hash}/100`, writeOffset: 0, data: blob.subarray(0, 10) }).finish(),
          );
          const out = await clientStreamRaw(client, md.path, [ok, INVALID[2]!, ok]);
          expect(out.code).not.toBe(0);
          // The upload is still there to ask about.
          await call(d.clients.byteStream, 'QueryWriteStatus', { resourceName: `uploads/u/blobs/${digestOf(blob).hash}/100` }).catch(() => undefined);
        }
        await stillServing();
      });
    }
  }

  it('survives semantically absurd but well-formed requests', async () => {
    tally.add(10);
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
    for (const o of outs as Array<{ code?: number; details?: string } | undefined>) expect(o?.code, o?.details).not.toBe(grpc.status.UNKNOWN);
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
