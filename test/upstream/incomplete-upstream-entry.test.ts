import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_UPSTREAM } from '../../src/config/config.js';
import { InstancePolicy } from '../../src/digest/instance-name.js';
import { re } from '../../src/proto.js';
import { actionCacheDefinition } from '../../src/services/action-cache-service.js';
import { capabilitiesDefinition, capabilitiesService } from '../../src/services/capabilities-service.js';
import { casDefinition } from '../../src/services/cas-service.js';
import { silentLogger } from '../../src/util/logger.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { bytes, call, digestOf, expectGrpcError } from '../helpers/storage.js';

/**
 * An upstream that serves action-cache entries whose blobs it no longer holds (a cache
 * without a completeness check): the workstation must treat them as misses. The upstream
 * here is a small gRPC server with reexec's own service definitions and Capabilities; its
 * action cache and FindMissingBlobs answer from two maps, which is all such a cache is.
 */
describe('an upstream serving entries whose blobs it lacks', () => {
  const held = bytes(2000, 1);
  const lost = bytes(2000, 2);
  const entries = new Map<string, re.IActionResult>();
  const blobs = new Map<string, Buffer>([[digestOf(held).hash, held]]);
  const complete = digestOf(Buffer.from('complete entry'));
  const incomplete = digestOf(Buffer.from('incomplete entry'));
  let server: grpc.Server;
  let ws: TestDaemon;

  beforeAll(async () => {
    entries.set(complete.hash, { exitCode: 0, outputFiles: [{ path: 'held', digest: digestOf(held) }] });
    entries.set(incomplete.hash, { exitCode: 0, outputFiles: [{ path: 'held', digest: digestOf(held) }, { path: 'lost', digest: digestOf(lost) }] });
    server = new grpc.Server();
    server.addService(capabilitiesDefinition, capabilitiesService(silentLogger, { instances: new InstancePolicy('*'), maxBatchBytes: 1 << 20, acUpdateEnabled: true }));
    server.addService(actionCacheDefinition, {
      GetActionResult: (c: grpc.ServerUnaryCall<re.GetActionResultRequest, re.ActionResult>, cb: grpc.sendUnaryData<re.ActionResult>) => {
        const r = entries.get(c.request.actionDigest?.hash ?? '');
        cb(r ? null : { code: grpc.status.NOT_FOUND, details: 'no entry' }, r ? re.ActionResult.create(r) : undefined);
      },
      UpdateActionResult: (_c: unknown, cb: grpc.sendUnaryData<re.ActionResult>) => cb({ code: grpc.status.UNIMPLEMENTED }),
    });
    server.addService(casDefinition, {
      FindMissingBlobs: (c: grpc.ServerUnaryCall<re.FindMissingBlobsRequest, re.FindMissingBlobsResponse>, cb: grpc.sendUnaryData<re.FindMissingBlobsResponse>) =>
        cb(null, re.FindMissingBlobsResponse.create({ missingBlobDigests: c.request.blobDigests.filter((d) => !blobs.has(d.hash ?? '')) })),
      BatchReadBlobs: (c: grpc.ServerUnaryCall<re.BatchReadBlobsRequest, re.BatchReadBlobsResponse>, cb: grpc.sendUnaryData<re.BatchReadBlobsResponse>) =>
        cb(null, re.BatchReadBlobsResponse.create({ responses: c.request.digests.map((d) => (blobs.has(d.hash ?? '') ? { digest: d, data: blobs.get(d.hash!)!, status: { code: 0 } } : { digest: d, status: { code: grpc.status.NOT_FOUND } })) })),
    });
    const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
    ws = await startTestDaemon((c) => {
      c.upstream = { ...DEFAULT_UPSTREAM, url: `grpc://127.0.0.1:${port}`, push: false };
    });
  });
  afterAll(async () => {
    await ws?.stop();
    server?.forceShutdown();
  });

  it('is a miss; a complete one is a hit', async () => {
    const got: any = await call(ws.clients.actionCache, 'GetActionResult', { actionDigest: complete });
    expect(got.outputFiles[0].digest).toEqual(digestOf(held));
    await expectGrpcError(call(ws.clients.actionCache, 'GetActionResult', { actionDigest: incomplete }), grpc.status.NOT_FOUND);
    expect(ws.daemon.storage.upstream!.stats.ac).toMatchObject({ upstream: 1, incomplete: 1 });
  });
});
