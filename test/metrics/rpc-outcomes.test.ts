import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call } from '../../src/client/reapi-client.js';
import { rpcOutcome } from '../../src/metrics/rpc-outcome.js';
import type { StatusSnapshot } from '../../src/status/status-snapshot.js';
import { REEXEC_BIN } from '../helpers/daemon-process.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { parsePrometheusText } from '../helpers/prometheus-text.js';
import { blobName, bsRead, digestOf, expectGrpcError } from '../helpers/storage.js';
import { statusFromMessage } from '../../src/services/admin-messages.js';

const INVALID_ARGUMENT = 3;
const NOT_FOUND = 5;

describe('RPC outcomes: a lookup that finds nothing is a miss, not an error', () => {
  it('classifies by method, status and (for Remote Asset probes) request', () => {
    const ac = '/build.bazel.remote.execution.v2.ActionCache/GetActionResult';
    const fetchBlob = '/build.bazel.remote.asset.v1.Fetch/FetchBlob';
    expect(rpcOutcome(ac, 0)).toBe('ok');
    expect(rpcOutcome(ac, NOT_FOUND)).toBe('miss');
    expect(rpcOutcome(ac, INVALID_ARGUMENT)).toBe('error');
    expect(rpcOutcome(fetchBlob, NOT_FOUND, { uris: ['urn:x'] })).toBe('miss');
    expect(rpcOutcome(fetchBlob, INVALID_ARGUMENT, { uris: [] })).toBe('ok');
    expect(rpcOutcome(fetchBlob, INVALID_ARGUMENT, { uris: [''] })).toBe('error');
    expect(rpcOutcome('/build.bazel.remote.asset.v1.Push/PushDirectory', INVALID_ARGUMENT, { uris: [] })).toBe('ok');
    expect(rpcOutcome('/google.bytestream.ByteStream/Read', NOT_FOUND)).toBe('error');
    expect(rpcOutcome('/build.bazel.remote.execution.v2.ContentAddressableStorage/GetTree', NOT_FOUND)).toBe('error');
  });

  describe('through a daemon: the status snapshot, `reexec status` and /metrics', () => {
    let d: TestDaemon;
    beforeAll(async () => {
      d = await startTestDaemon((c) => {
        c.execution.enabled = false;
        c.metrics.listen = '127.0.0.1:0';
      });
      // A cold cache: three action cache lookups and two asset lookups find nothing.
      for (let i = 0; i < 3; i++) await expectGrpcError(call(d.clients.actionCache, 'GetActionResult', { actionDigest: digestOf(Buffer.from(`cold ${i}`)) }), NOT_FOUND);
      await expectGrpcError(call(d.clients.fetch, 'FetchBlob', { uris: ['urn:fdc:example.com:2020:artifact:none'] }), NOT_FOUND);
      await expectGrpcError(call(d.clients.fetch, 'FetchDirectory', { uris: ['urn:fdc:example.com:2020:source:none'] }), NOT_FOUND);
      // BuildStream's probes, answered as the protocol says.
      await expectGrpcError(call(d.clients.fetch, 'FetchBlob', {}), INVALID_ARGUMENT);
      await expectGrpcError(call(d.clients.push, 'PushDirectory', {}), INVALID_ARGUMENT);
      // Missing blobs reported inside an OK answer.
      await call(d.clients.cas, 'FindMissingBlobs', { blobDigests: [digestOf(Buffer.from('absent'))] });
      // Real errors: a read of a blob that is not there, an empty URI.
      await expectGrpcError(bsRead(d.clients.byteStream, blobName(digestOf(Buffer.from('absent')))), NOT_FOUND);
      await expectGrpcError(call(d.clients.fetch, 'FetchBlob', { uris: [''] }), INVALID_ARGUMENT);
    });
    afterAll(() => d?.stop());

    it('counts 5 misses and 2 errors, per method too', async () => {
      const s = statusFromMessage(await call(d.clients.admin, 'GetStatus', {}));
      expect(s.rpc).toMatchObject({ calls: 10, misses: 5, errors: 2 });
      const byMethod = Object.fromEntries(s.rpc.methods.map((m) => [m.method, { calls: m.calls, misses: m.misses, errors: m.errors }]));
      expect(byMethod).toEqual({
        'ActionCache.GetActionResult': { calls: 3, misses: 3, errors: 0 },
        'Fetch.FetchBlob': { calls: 3, misses: 1, errors: 1 },
        'Fetch.FetchDirectory': { calls: 1, misses: 1, errors: 0 },
        'Push.PushDirectory': { calls: 1, misses: 0, errors: 0 },
        'ContentAddressableStorage.FindMissingBlobs': { calls: 1, misses: 0, errors: 0 },
        'ByteStream.Read': { calls: 1, misses: 0, errors: 1 },
      });
    });

    it('says so in `reexec status` (plain and --json)', async () => {
      const plain = await execa(process.execPath, [REEXEC_BIN, 'status', '--endpoint', d.address, '--plain'], { reject: false });
      expect(plain.exitCode, plain.stderr).toBe(0);
      // The GetStatus calls themselves are left out.
      expect(plain.stdout).toMatch(/^RPCs \(last minute, admin calls left out\): 10 calls \(\S+\/s\), 5 misses, 2 errors/m);
      expect(plain.stdout).toMatch(/^ {2}ActionCache\.GetActionResult +3 calls +3 misses +0 errors/m);
      const json = await execa(process.execPath, [REEXEC_BIN, 'status', '--endpoint', d.address, '--json'], { reject: false });
      expect((JSON.parse(json.stdout) as StatusSnapshot).rpc).toMatchObject({ misses: 5, errors: 2 });
    });

    it('labels every call with its outcome in /metrics, next to the gRPC codes', async () => {
      const m = parsePrometheusText(await (await fetch(d.daemon.metricsServer!.url)).text());
      const at = (service: string, method: string, outcome: string): number =>
        m.value('reexec_grpc_server_outcomes_total', { grpc_service: service, grpc_method: method, outcome });
      const ac = 'build.bazel.remote.execution.v2.ActionCache';
      const fetchService = 'build.bazel.remote.asset.v1.Fetch';
      expect([at(ac, 'GetActionResult', 'ok'), at(ac, 'GetActionResult', 'miss'), at(ac, 'GetActionResult', 'error')]).toEqual([0, 3, 0]);
      expect([at(fetchService, 'FetchBlob', 'ok'), at(fetchService, 'FetchBlob', 'miss'), at(fetchService, 'FetchBlob', 'error')]).toEqual([1, 1, 1]);
      expect(at('google.bytestream.ByteStream', 'Read', 'error')).toBe(1);
      expect(m.value('grpc_server_handled_total', { grpc_service: ac, grpc_method: 'GetActionResult', grpc_code: 'NOT_FOUND' })).toBe(3);
      expect(m.types.get('reexec_grpc_server_outcomes_total')).toBe('counter');
    });
  });
});
