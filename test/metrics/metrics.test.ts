import { rmSync } from 'node:fs';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../helpers/wait.js';
import { call } from '../../src/client/reapi-client.js';
import type { LocalTree } from '../../src/client/merkle.js';
import { findBubblewrap } from '../../src/runner/bubblewrap-runner.js';
import { hostIsa } from '../../src/scheduler/platform.js';
import { executeAll, shAction, uploadBusyboxRoot } from '../helpers/action-batch.js';
import { BUSYBOX } from '../helpers/busybox-root.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { execute } from '../helpers/exec-client.js';
import { parsePrometheusText, type Exposition } from '../helpers/prometheus-text.js';
import { statusFromMessage } from '../../src/services/admin-messages.js';

const missing = !BUSYBOX ? 'busybox-static (apt-get install busybox-static)' : !findBubblewrap() ? 'bubblewrap (apt-get install bubblewrap)' : undefined;

async function scrape(url: string): Promise<Exposition> {
  const res = await fetch(url);
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
  return parsePrometheusText(await res.text());
}

describe.skipIf(missing)(`Prometheus /metrics${missing ? ` (skipped: install ${missing})` : ''}`, () => {
  let d: TestDaemon;
  let url: string;
  let tree: LocalTree;
  let hostRoot: string;

  beforeAll(async () => {
    d = await startTestDaemon((c) => {
      c.execution.pools = [{ name: 'native', isa: [hostIsa()], slots: 2 }];
      c.metrics.listen = '127.0.0.1:0';
    });
    url = d.daemon.metricsServer!.url;
    ({ tree, hostRoot } = await uploadBusyboxRoot(d.clients));
  });
  afterAll(async () => {
    await d?.stop();
    if (hostRoot) rmSync(hostRoot, { recursive: true, force: true });
  });

  it('serves loopback /metrics that the status snapshot names, and nothing else', async () => {
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/metrics$/);
    const res: any = await call(d.clients.admin, 'GetStatus', {});
    expect(statusFromMessage(res).metrics).toEqual({ url });
    const other = await fetch(url.replace('/metrics', '/'));
    expect(other.status).toBe(404);
    expect(await other.text()).toContain('/metrics');
  });

  it('counts RPCs, bytes, cache lookups, queues and action times', async () => {
    const before = await scrape(url);
    expect(before.value('reexec_queue_depth', { pool: 'native' })).toBe(0);
    expect(before.value('reexec_worker_slots', { pool: 'native' })).toBe(2);

    // Three seconds each: the state below lasts as long as the first two run, which a slow
    // scrape on a loaded machine must not miss.
    const actions = await Promise.all([1, 2, 3].map((i) => shAction(d.clients, tree.root, `sleep 3; echo ${i}`)));
    const batch = executeAll(d.clients, actions);
    // While they run: two running, one waiting.
    await waitFor('two actions running and one waiting', async () => {
      const during = await scrape(url);
      return during.value('reexec_running_actions', { pool: 'native' }) === 2 && during.value('reexec_queue_depth', { pool: 'native' }) === 1;
    });
    await batch;
    await execute(d.clients, actions[0]!); // a cache hit
    const missingBlob = await call<object, any>(d.clients.actionCache, 'GetActionResult', { actionDigest: { hash: 'a'.repeat(64), sizeBytes: 1 } }).catch((e) => e);
    expect(missingBlob.code).toBe(5);

    const m = await scrape(url);
    // RPC counts and latency by method and code.
    const exec = { grpc_service: 'build.bazel.remote.execution.v2.Execution', grpc_method: 'Execute' };
    expect(m.value('grpc_server_handled_total', { ...exec, grpc_code: 'OK', grpc_type: 'server_stream' })).toBe(4);
    expect(m.value('grpc_server_started_total', exec)).toBe(4);
    const notFound = { grpc_service: 'build.bazel.remote.execution.v2.ActionCache', grpc_method: 'GetActionResult', grpc_code: 'NOT_FOUND' };
    expect(m.value('grpc_server_handled_total', notFound)).toBe(1);
    const latency = m.histogram('grpc_server_handling_seconds', { ...exec, grpc_code: 'OK' });
    expect(latency.count).toBe(4);
    expect(latency.sum).toBeGreaterThan(9); // three runs of three seconds or more
    expect(latency.buckets.get('+Inf')).toBe(4);
    expect(latency.buckets.get('0.5')).toBeLessThanOrEqual(1); // only the cache hit is quick
    // Bytes in and out.
    const upload = { grpc_service: 'build.bazel.remote.execution.v2.ContentAddressableStorage', grpc_method: 'BatchUpdateBlobs' };
    expect(m.value('reexec_grpc_server_received_bytes_total', upload)).toBeGreaterThan(0);
    expect(m.value('reexec_grpc_server_received_bytes_total')).toBeGreaterThan(1_000_000); // busybox went up
    expect(m.value('reexec_grpc_server_sent_bytes_total', exec)).toBeGreaterThan(0);
    expect(m.value('grpc_server_msg_received_total', exec)).toBe(4);
    // Action cache: three misses then a hit from Execute, a miss from GetActionResult.
    expect(m.value('reexec_ac_lookups_total', { result: 'hit' })).toBe(1);
    expect(m.value('reexec_ac_lookups_total', { result: 'miss' })).toBe(4);
    expect(m.value('reexec_ac_entries')).toBe(3);
    expect(m.value('reexec_cas_blobs')).toBeGreaterThan(10);
    expect(m.value('reexec_cas_bytes')).toBeGreaterThan(1_000_000);
    const res: any = await call(d.clients.admin, 'GetStatus', {});
    expect(m.value('reexec_cas_budget_bytes')).toBe(statusFromMessage(res).cache.cas.budgetBytes);
    expect(m.value('reexec_cas_lookups_total', { operation: 'find_missing', result: 'hit' })).toBeGreaterThan(0);
    // Queues drained; executions timed.
    expect(m.value('reexec_queue_depth', { pool: 'native' })).toBe(0);
    expect(m.value('reexec_running_actions', { pool: 'native' })).toBe(0);
    expect(m.value('reexec_actions_executed_total', { pool: 'native', outcome: 'success' })).toBe(3);
    const run = m.histogram('reexec_action_execution_seconds', { pool: 'native' });
    expect(run.count).toBe(3);
    expect(run.sum).toBeGreaterThanOrEqual(3);
    expect(m.histogram('reexec_action_staging_seconds', { pool: 'native' }).count).toBe(3);
    const queued = m.histogram('reexec_action_queued_seconds', { pool: 'native' });
    expect(queued.count).toBe(3);
    expect(queued.sum).toBeGreaterThan(0.5); // the third waited for a slot
    expect(m.histogram('reexec_action_output_upload_seconds', { pool: 'native' }).count).toBe(3);
    expect(m.types.get('reexec_action_execution_seconds')).toBe('histogram');
    expect(m.types.get('grpc_server_handled_total')).toBe('counter');
    expect(m.types.get('reexec_queue_depth')).toBe('gauge');
    // Process metrics come along.
    expect(m.value('process_resident_memory_bytes')).toBeGreaterThan(0);
  });

  it('counts garbage collection runs the collector reports', async () => {
    d.daemon.telemetry.gc.recordRun({ trigger: 'auto', evictedBlobs: 12, evictedBytes: 3456, durationSeconds: 0.2 });
    d.daemon.telemetry.gc.recordRun({ trigger: 'manual', evictedBlobs: 5, evictedBytes: 10, durationSeconds: 0.1, dryRun: true });
    const m = await scrape(url);
    expect(m.value('reexec_gc_runs_total', { trigger: 'auto', result: 'ok' })).toBe(1);
    expect(m.value('reexec_gc_runs_total', { trigger: 'manual', result: 'dry_run' })).toBe(1);
    expect(m.value('reexec_gc_evicted_bytes_total', { trigger: 'auto' })).toBe(3456);
    expect(m.value('reexec_gc_evicted_blobs_total')).toBe(12);
    const res: any = await call(d.clients.admin, 'GetStatus', {});
    expect(statusFromMessage(res).gc).toMatchObject({ trigger: 'manual', dryRun: true, evictedBlobs: 5 });
  });
});

describe('the metrics address', () => {
  it('a taken port leaves the daemon serving, without metrics, and says why', async () => {
    const blocker = createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
    const port = (blocker.address() as AddressInfo).port;
    const d = await startTestDaemon((c) => {
      c.metrics.listen = `127.0.0.1:${port}`;
      c.execution.enabled = false;
    });
    try {
      expect(d.daemon.metricsServer).toBeUndefined();
      const res: any = await call(d.clients.admin, 'GetStatus', {});
      const snap = statusFromMessage(res);
      expect(snap.metrics.url).toBeNull();
      expect(snap.metrics.error).toContain(`127.0.0.1:${port}`);
      expect(snap.execution).toBeNull();
    } finally {
      await d.stop();
      blocker.close();
    }
  });
});
