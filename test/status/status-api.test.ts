import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call } from '../../src/client/reapi-client.js';
import type { LocalTree } from '../../src/client/merkle.js';
import { findBubblewrap } from '../../src/runner/bubblewrap-runner.js';
import { hostIsa } from '../../src/scheduler/platform.js';
import type { StatusSnapshot } from '../../src/status/status-snapshot.js';
import { executeAll, shAction, uploadBusyboxRoot } from '../helpers/action-batch.js';
import { BUSYBOX } from '../helpers/busybox-root.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { execute } from '../helpers/exec-client.js';
import { statusFromMessage } from '../../src/services/admin-messages.js';

const missing = !BUSYBOX ? 'busybox-static (apt-get install busybox-static)' : !findBubblewrap() ? 'bubblewrap (apt-get install bubblewrap)' : undefined;

async function status(d: TestDaemon): Promise<StatusSnapshot> {
  return statusFromMessage(await call(d.clients.admin, 'GetStatus', {}));
}

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe.skipIf(missing)(`Status snapshot of a daemon running actions${missing ? ` (skipped: install ${missing})` : ''}`, () => {
  let d: TestDaemon;
  let tree: LocalTree;
  let hostRoot: string;

  beforeAll(async () => {
    d = await startTestDaemon((c) => {
      c.execution.pools = [{ name: 'native', isa: [hostIsa()], slots: 2 }];
      c.metrics.listen = null;
    });
    ({ tree, hostRoot } = await uploadBusyboxRoot(d.clients));
  });
  afterAll(async () => {
    await d?.stop();
    if (hostRoot) rmSync(hostRoot, { recursive: true, force: true });
  });

  it('shows each slot running its action and the rest waiting, then every completion', async () => {
    // Each action sleeps, so they stay in flight while the test looks: two run, two wait.
    const actions = await Promise.all(
      [1, 2, 3, 4].map((i) => shAction(d.clients, tree.root, `sleep 1.5; echo action-${i}; exit ${i === 4 ? 3 : 0}`)),
    );
    const batch = executeAll(d.clients, actions);

    const busy = await until('two running, two queued', async () => {
      const s = await status(d);
      const pool = s.execution?.pools[0];
      // Each action is first staged, then runs (sleeps): wait until both sleep.
      return pool && pool.slots.filter((x) => x.action?.phase === 'running').length === 2 && pool.queueDepth === 2 ? s : undefined;
    });
    const pool = busy.execution!.pools[0]!;
    expect(pool.name).toBe('native');
    expect(pool.isas).toEqual([hostIsa()]);
    expect(pool.slots.map((x) => x.slot)).toEqual(['native-0', 'native-1']);
    for (const slot of pool.slots) {
      const a = slot.action!;
      expect(a.operation).toMatch(/^operations\//);
      expect(a.argv.slice(0, 2)).toEqual(['sh', '-c']);
      expect(a.argv[2]).toMatch(/^sleep 1\.5; echo action-\d/);
      expect(a.stage).toBe('EXECUTING');
      expect(a.phase).toBe('running');
      expect(a.elapsedMs).toBeGreaterThanOrEqual(0);
      expect(a.client).toMatch(/127\.0\.0\.1/);
    }
    expect(busy.execution!.runningTotal).toBe(2);
    expect(busy.execution!.queuedTotal).toBe(2);
    expect(busy.execution!.queued).toHaveLength(2);
    expect(busy.execution!.queued[0]!.waitingMs).toBeGreaterThanOrEqual(0);
    const running = new Set(pool.slots.map((x) => x.action!.operation));
    for (const q of busy.execution!.queued) expect(running.has(q.operation)).toBe(false);

    // Elapsed time moves on while the action runs.
    await new Promise((r) => setTimeout(r, 300));
    const later = await status(d);
    const again = later.execution!.pools[0]!.slots.find((x) => x.action?.operation === pool.slots[0]!.action!.operation);
    if (again) expect(again.action!.elapsedMs).toBeGreaterThan(pool.slots[0]!.action!.elapsedMs);

    const results = await batch;
    expect(results.map((r) => r.response?.result?.exitCode)).toEqual([0, 0, 0, 3]);

    // The same action again is answered from the action cache.
    const hit = await execute(d.clients, actions[0]!);
    expect(hit.response?.cachedResult).toBe(true);

    const done = await status(d);
    const ex = done.execution!;
    expect(ex.runningTotal).toBe(0);
    expect(ex.queuedTotal).toBe(0);
    expect(ex.pools[0]!.slots.every((x) => x.action === null)).toBe(true);
    expect(ex.recent).toHaveLength(5);
    expect(ex.recent[0]!.cached).toBe(true);
    expect(ex.recent[0]!.exitCode).toBe(0);
    const executed = ex.recent.filter((r) => !r.cached);
    expect(executed.map((r) => r.exitCode).sort()).toEqual([0, 0, 0, 3]);
    for (const r of executed) {
      expect(r.status).toBe('OK');
      expect(r.durationMs).toBeGreaterThanOrEqual(1400);
      expect(r.client).toMatch(/127\.0\.0\.1/);
      expect(r.argv[0]).toBe('sh');
    }
    // Newest first.
    const times = ex.recent.map((r) => Date.parse(r.completedAt));
    expect([...times].sort((a, b) => b - a)).toEqual(times);
    expect(ex.throughput.executed.reduce((a, b) => a + b, 0)).toBe(4);
    expect(ex.throughput.cached.reduce((a, b) => a + b, 0)).toBe(1);
    expect(ex.throughput.executed).toHaveLength(60);

    // Action cache: four misses (first runs; the failure is not cached) and one hit.
    expect(done.cache.ac.hits).toBe(1);
    expect(done.cache.ac.misses).toBe(4);
    expect(done.cache.ac.hitRate).toBeCloseTo(0.2);
    expect(done.cache.ac.lastMinute.hits).toBe(1);
    expect(done.cache.ac.entries).toBe(3);

    // RPCs of the last minute: uploads and executions, without the status calls themselves.
    expect(done.rpc.calls).toBeGreaterThan(5);
    expect(done.rpc.bytesIn).toBeGreaterThan(1_000_000); // the busybox binary went up
    expect(done.rpc.bytesOut).toBeGreaterThan(0);
    const methods = new Map(done.rpc.methods.map((m) => [m.method, m]));
    expect(methods.get('Execution.Execute')?.calls).toBe(5);
    expect(methods.get('ContentAddressableStorage.BatchUpdateBlobs')?.calls).toBeGreaterThan(0);
    expect([...methods.keys()].some((m) => m.startsWith('Admin.'))).toBe(false);
  });

  it('reports the CAS size, the data dir and the daemon', async () => {
    const s = await status(d);
    expect(s.cache.cas.bytes).toBeGreaterThan(1_000_000); // busybox and the action logs
    expect(s.cache.cas.blobs).toBeGreaterThan(10);
    // A number once a budget is configured (garbage collection), null before.
    if (s.cache.cas.budgetBytes !== null) expect(s.cache.cas.budgetBytes).toBeGreaterThan(0);
    expect(s.cache.cas.disk!.totalBytes).toBeGreaterThan(s.cache.cas.disk!.freeBytes);
    expect(s.version).toMatch(/^\d+\.\d+\.\d+/);
    expect(s.listeners).toEqual([d.address]);
    expect(s.metrics).toEqual({ url: null });
    expect(Date.parse(s.takenAt)).toBeGreaterThanOrEqual(Date.parse(s.startedAt));
  });
});
