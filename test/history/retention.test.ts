import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { treeFromDirectory } from '../../src/client/merkle.js';
import { defaultConfig } from '../../src/config/config.js';
import { Digest } from '../../src/digest/digest.js';
import { entryId, type HistoryEntry } from '../../src/history/entry.js';
import { HistoryClient } from '../../src/history/history-client.js';
import { HistoryStore } from '../../src/history/history-store.js';
import { HistoryRecorder } from '../../src/history/recorder.js';
import { findBubblewrap } from '../../src/runner/bubblewrap-runner.js';
import { LmdbEnv } from '../../src/store/lmdb-env.js';
import { silentLogger } from '../../src/util/logger.js';
import { makeBusyboxRoot, BUSYBOX } from '../helpers/busybox-root.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { startDaemonProcess } from '../helpers/daemon-process.js';
import { execute, uploadAction, uploadTree } from '../helpers/exec-client.js';

const entry = (at: number, i: number, extra: Partial<HistoryEntry> = {}): HistoryEntry => ({
  id: entryId(at),
  at,
  kind: 'execute',
  outcome: 'ran',
  instance: '',
  digestFunction: 'sha256',
  action: `${Digest.compute(Buffer.from(`action ${i}`)).hash}/${10 + i}`,
  operation: `operations/op-${i}`,
  client: { peer: 'ipv4:127.0.0.1:1' },
  status: { code: 0 },
  failed: i % 2 === 0,
  exitCode: i % 2 === 0 ? 1 : 0,
  request: { targetId: `//t:${i % 3}`, mnemonic: 'Genrule' },
  argv: ['sh', '-c', `step ${i}`],
  ...extra,
});

describe('history store and recorder', () => {
  let dir: string;
  let env: LmdbEnv;
  afterEach(async () => {
    vi.useRealTimers();
    await env?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('retention removes the oldest entries past the count, then past the age, in short batches, index and all', async () => {
    dir = mkdtempSync(join(tmpdir(), 'reexec-history-store-'));
    env = LmdbEnv.open(dir);
    const store = new HistoryStore(env);
    const entries = Array.from({ length: 30 }, (_, i) => entry(1_000_000 + i * 1000, i));
    await store.write(entries);
    expect(store.size).toBe(30);
    // Count: 30 entries, keep 10, 4 a batch: 20 go, the oldest first.
    let removed = 0;
    for (let n; (n = await store.sweep(10, 0, 4)) > 0; ) {
      expect(n).toBeLessThanOrEqual(4);
      removed += n;
    }
    expect(removed).toBe(20);
    expect(store.size).toBe(10);
    expect(store.list({}, 100).map((e) => e.id)).toEqual(entries.slice(20).map((e) => e.id).reverse());
    expect([...store.byAction(entries[5]!.action)]).toEqual([]);
    expect(store.byOperation('operations/op-5')).toBeUndefined();
    expect([...store.failures()].map((e) => e.id)).toEqual(entries.filter((e, i) => i >= 20 && e.failed).map((e) => e.id).reverse());
    // Age: everything before the 25th entry's time goes too.
    while ((await store.sweep(10, entries[25]!.at, 500)) > 0);
    expect(store.list({}, 100).map((e) => e.id)).toEqual(entries.slice(25).map((e) => e.id).reverse());
    expect([...store.byTarget('//t:1\u0001Genrule')].map((e) => e.id)).toEqual([entries[28]!.id, entries[25]!.id]);
    // A reopened store counts what is there.
    expect(new HistoryStore(env).size).toBe(5);
  });

  it('the recorder writes what it buffered once a second (a crash loses at most that), and on stop', async () => {
    dir = mkdtempSync(join(tmpdir(), 'reexec-history-recorder-'));
    env = LmdbEnv.open(dir);
    const store = new HistoryStore(env);
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
    const config = { ...defaultConfig().history, maxEntries: 3 };
    const recorder = new HistoryRecorder({ store, config, log: silentLogger, flushIntervalMs: 1000, sweepIntervalMs: 60_000 });
    const seen: HistoryEntry[] = [];
    recorder.on('entry', (e: HistoryEntry) => seen.push(e));
    recorder.start();
    recorder.record(entry(Date.now(), 1));
    recorder.record(entry(Date.now(), 2));
    expect(seen).toHaveLength(2); // listeners hear of it at once
    expect(store.size).toBe(0); // written later, off the caller's path
    await vi.advanceTimersByTimeAsync(1000);
    await recorder.flush();
    expect(store.size).toBe(2);
    for (let i = 3; i < 7; i++) recorder.record(entry(Date.now(), i));
    await recorder.stop();
    expect(store.size).toBe(6);
    await recorder.sweep();
    expect(store.size).toBe(3);
  });
});

describe.skipIf(!BUSYBOX || !findBubblewrap())('history across a crash, and failed actions kept from eviction', () => {
  it('what `reexec history` has shown survives a SIGKILL of the daemon', async () => {
    const root = makeBusyboxRoot();
    const d = await startDaemonProcess();
    const clients = (await import('../../src/client/reapi-client.js')).connect(d.address);
    try {
      const tree = await treeFromDirectory(root);
      await uploadTree(clients, tree);
      const a = await uploadAction(clients, tree.root, { args: ['sh', '-c', 'echo crash-test'] });
      await execute(clients, a);
      const history = new HistoryClient(d.address);
      // Listing writes what is buffered first: once shown, it is on disk.
      expect((await history.list({})).map((e) => e.action)).toEqual([a.toString()]);
      history.close();
      await d.kill();
      const again = await startDaemonProcess({ dataDir: d.dataDir });
      const h2 = new HistoryClient(again.address);
      try {
        expect((await h2.list({})).map((e) => e.action)).toEqual([a.toString()]);
      } finally {
        h2.close();
        await again.stop();
      }
    } finally {
      clients.close();
      rmSync(root, { recursive: true, force: true });
      rmSync(d.dataDir, { recursive: true, force: true });
    }
  });

  describe('gc', () => {
    let d: TestDaemon;
    let root: string;
    let history: HistoryClient;
    const dataDir = mkdtempSync(join(tmpdir(), 'reexec-history-gc-'));
    beforeAll(async () => {
      d = await startTestDaemon((c) => {
        c.storage.gracePeriodSeconds = 0;
        c.history.keepFailed = 1;
        c.execution.pools = [{ name: 'native', isa: ['x86-64'], slots: 1 }];
      }, dataDir);
      root = makeBusyboxRoot();
      history = new HistoryClient(d.address);
    });
    afterAll(async () => {
      history?.close();
      await d?.stop();
      rmSync(root, { recursive: true, force: true });
      rmSync(dataDir, { recursive: true, force: true });
    });

    /** An action in an input root of its own (one file only it has). */
    async function action(name: string, script: string): Promise<Digest> {
      mkdirSync(join(root, 'work'), { recursive: true });
      writeFileSync(join(root, 'work', 'only-here.txt'), `${name}\n`);
      const tree = await treeFromDirectory(root);
      await uploadTree(d.clients, tree);
      const a = await uploadAction(d.clients, tree.root, { args: ['sh', '-c', script], workingDirectory: 'work' });
      await execute(d.clients, a);
      return a;
    }

    it('keeps the blobs of the newest history.keep-failed failed actions; the others say what is gone and why', async () => {
      const older = await action('older', 'echo older failure >&2; exit 1');
      const newest = await action('newest', 'echo newest failure >&2; exit 1');
      const good = await action('good', 'echo fine');
      // Held in the background: wait until the newest failure's blobs are (a condition, not a time).
      for (let i = 0; !(await history.show(newest.toString())).kept; i++) {
        if (i > 200) throw new Error('the newest failed action was never kept');
        await new Promise((r) => setTimeout(r, 50));
      }
      expect((await history.show(older.toString())).kept).toBe(false);
      const summary = await d.daemon.gc.collect({ targetBytes: 0 });
      expect(summary.freedBlobs).toBeGreaterThan(0);

      const kept = await history.show(newest.toString());
      expect(kept.missing).toEqual([]);
      expect(Buffer.from(kept.stderr!.tail!).toString()).toBe('newest failure\n');
      expect(kept.command?.arguments).toEqual(['sh', '-c', 'echo newest failure >&2; exit 1']);

      const gone = await history.show(older.toString());
      expect(gone.missing).toEqual(expect.arrayContaining(['Action', 'stderr']));
      expect(gone.entry?.argv).toEqual(['sh', '-c', 'echo older failure >&2; exit 1']); // what was recorded stays
      expect(gone.note).toMatch(/no longer in the CAS \(evicted\).*newest 1 failed actions are kept from eviction \(history.keep-failed\).*raise history.keep-failed/);

      const ok = await history.show(good.toString());
      expect(ok.missing).toContain('Action');
      expect(ok.note).toMatch(/Only failed actions' blobs are kept from eviction/);
      // The shell needs the Action: refused, saying why.
      await expect(history.prepareShell(good.toString())).rejects.toThrow(/the Action of .* is no longer in the CAS \(evicted\).*history.keep-failed/);

      // `reexec gc --data-dir` without a daemon keeps them too.
      history.close();
      d.clients.close();
      await d.daemon.stop();
      const config = defaultConfig();
      config.dataDir = d.dataDir;
      config.storage.gracePeriodSeconds = 0;
      config.storage.minFreeDisk = { bytes: 0 };
      config.history.keepFailed = 1;
      const { collectGarbageOffline } = await import('../../src/gc/offline-gc.js');
      const offline = await collectGarbageOffline(config, { targetBytes: 0 });
      expect(offline.keptInUse.blobs).toBeGreaterThan(0);
      d = await startTestDaemon((c) => void (c.history.keepFailed = 1), d.dataDir);
      history = new HistoryClient(d.address);
      expect((await history.show(newest.toString())).missing).toEqual([]);
    });
  });
});
