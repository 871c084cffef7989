#!/usr/bin/env node
// Benchmark of garbage collection (not a test): fills a store with N small blobs whose access
// times spread over D days, starts a reexec daemon on it, and collects half of it through the
// Admin API (as `reexec gc` does) while a worker thread keeps reading over gRPC
// (BatchReadBlobs of blobs that stay, FindMissingBlobs). Reports collection time, the
// daemon's memory and event-loop delay, and read latency before and during the collection.
//
//   npm run build && node scripts/bench-gc.js [--blobs 1000000] [--size 100] [--days 30]
//                                              [--evict 0.5] [--keep] [--json]
//
// Runs from dist/: build first.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir, cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import { parseArgs } from 'node:util';

const { values: args } = parseArgs({
  options: {
    blobs: { type: 'string', default: '1000000' },
    size: { type: 'string', default: '100' },
    days: { type: 'string', default: '30' },
    evict: { type: 'string', default: '0.5' },
    keep: { type: 'boolean', default: false },
    json: { type: 'boolean', default: false },
    // Internal: fill DIR and exit (run as a child, so the measured process starts fresh).
    'fill-dir': { type: 'string' },
  },
});
const N = Number(args.blobs);
const SIZE = Number(args.size);
const DAYS = Number(args.days);
const EVICT = Number(args.evict);

const dist = new URL('../dist/', import.meta.url);
const { LmdbEnv } = await import(new URL('store/lmdb-env.js', dist).href);
const { LmdbBlobStore, DEFAULT_BLOB_STORE_OPTIONS } = await import(new URL('cas/lmdb-blob-store.js', dist).href);
const { Digest } = await import(new URL('digest/digest.js', dist).href);
const { Daemon } = await import(new URL('daemon/daemon.js', dist).href);
const { defaultConfig } = await import(new URL('config/config.js', dist).href);
const { connect } = await import(new URL('client/reapi-client.js', dist).href);
const { gcUpdateFromMessage } = await import(new URL('services/admin-messages.js', dist).href);
const { silentLogger } = await import(new URL('util/logger.js', dist).href);
const { BLOB_OVERHEAD_BYTES } = await import(new URL('gc/storage-budget.js', dist).href);

const log = (s) => process.stderr.write(`${s}\n`);
const mib = (n) => `${(n / 1024 / 1024).toFixed(1)} MiB`;
/** Blob i: SIZE bytes, distinct. */
const blob = (i) => Buffer.from(`bench-gc blob ${i} `.padEnd(SIZE, '.')).subarray(0, SIZE);

if (args['fill-dir']) {
  // 1. Fill: blob i last used at now - DAYS + i * (DAYS / N): the lower indices are the older.
  const dataDir = args['fill-dir'];
  {
    const t0 = performance.now();
    const env = LmdbEnv.open(dataDir, { noSync: true });
    const store = new LmdbBlobStore(env, dataDir, { ...DEFAULT_BLOB_STORE_OPTIONS, fsync: false });
    const realNow = Date.now;
    const start = realNow() - DAYS * 86400_000;
    const step = (DAYS * 86400_000) / N;
    let pending = [];
    for (let i = 0; i < N; i++) {
      const data = blob(i);
      Date.now = () => start + i * step;
      pending.push(store.put(Digest.compute(data), data));
      Date.now = realNow;
      if (pending.length === 10_000) {
        await Promise.all(pending);
        pending = [];
        if (i % 100_000 === 99_999) log(`filled ${i + 1} blobs`);
      }
    }
    await Promise.all(pending);
    const seconds = (performance.now() - t0) / 1000;
    await env.close();
    log(`filled ${N} blobs of ${SIZE} B in ${seconds.toFixed(1)} s`);
    process.stdout.write(JSON.stringify({ seconds }));
  }
  process.exit(0);
}

const dataDir = mkdtempSync(join(tmpdir(), 'reexec-bench-gc-'));
const result = { blobs: N, blobBytes: SIZE, accessTimesOverDays: DAYS, evictFraction: EVICT, host: { cpus: cpus().length, cpuModel: cpus()[0]?.model, memBytes: totalmem(), node: process.version } };

try {
  const fill = spawnSync(process.execPath, [fileURLToPath(import.meta.url), '--fill-dir', dataDir, '--blobs', String(N), '--size', String(SIZE), '--days', String(DAYS)], {
    stdio: ['ignore', 'pipe', 'inherit'],
    encoding: 'utf8',
  });
  if (fill.status !== 0) throw new Error(`filling the store failed (exit ${fill.status})`);
  result.fill = JSON.parse(fill.stdout);

  // 2. A daemon on that store (budget far above it: no background eviction), and a reader.
  const config = defaultConfig();
  config.listen = ['127.0.0.1:0'];
  config.dataDir = dataDir;
  config.storage.fsync = false;
  config.storage.maxBytes = { bytes: 1024 ** 4 };
  config.storage.gracePeriodSeconds = 60;
  config.execution.enabled = false;
  config.metrics.listen = null;
  const daemon = await Daemon.start(config, silentLogger);
  const address = daemon.addresses[0];

  // The reader reads blobs from the newest (1 - EVICT) of the store: they all stay.
  const reader = new Worker(
    `
    const { parentPort, workerData } = require('node:worker_threads');
    (async () => {
      const { connect, call } = await import(workerData.client);
      const { Digest } = await import(workerData.digest);
      const clients = connect(workerData.address);
      const blob = (i) => Buffer.from(('bench-gc blob ' + i + ' ').padEnd(workerData.size, '.')).subarray(0, workerData.size);
      const keepFrom = Math.ceil(workerData.n * workerData.evict) + 1000;
      let stop = false;
      parentPort.on('message', (m) => { if (m === 'stop') stop = true; });
      let lat = [];
      let blobsRead = 0;
      let misses = 0;
      let last = Date.now();
      while (!stop) {
        const ds = [];
        for (let k = 0; k < 100; k++) ds.push(Digest.compute(blob(keepFrom + Math.floor(Math.random() * (workerData.n - keepFrom)))).toProto());
        const t = performance.now();
        const res = await call(clients.cas, 'BatchReadBlobs', { digests: ds });
        await call(clients.cas, 'FindMissingBlobs', { blobDigests: ds });
        lat.push(performance.now() - t);
        for (const r of res.responses) if (r.status && r.status.code) misses++;
        blobsRead += res.responses.length;
        if (Date.now() - last >= 250) {
          parentPort.postMessage({ lat, blobsRead, misses, at: Date.now() });
          lat = [];
          blobsRead = 0;
          misses = 0;
          last = Date.now();
        }
      }
      clients.close();
      parentPort.postMessage('done');
    })().catch((e) => { parentPort.postMessage({ error: String(e && e.stack || e) }); });
    `,
    {
      eval: true,
      workerData: { address, n: N, size: SIZE, evict: EVICT, client: new URL('client/reapi-client.js', dist).href, digest: new URL('digest/digest.js', dist).href },
    },
  );
  const samples = [];
  reader.on('message', (m) => {
    if (m && m.error) {
      log(`reader failed: ${m.error}`);
      process.exitCode = 1;
    } else if (m && m.lat) samples.push(m);
  });
  const summarise = (from, to) => {
    const s = samples.filter((x) => x.at > from && x.at <= to);
    const lat = s.flatMap((x) => x.lat).sort((a, b) => a - b);
    const q = (p) => (lat.length ? lat[Math.min(lat.length - 1, Math.floor(p * lat.length))] : NaN);
    const blobs = s.reduce((n, x) => n + x.blobsRead, 0);
    const misses = s.reduce((n, x) => n + x.misses, 0);
    return { requests: lat.length, blobsPerSecond: blobs / ((to - from) / 1000), p50Ms: q(0.5), p99Ms: q(0.99), maxMs: lat[lat.length - 1] ?? NaN, misses };
  };

  // 3. Reads alone, as the baseline.
  await new Promise((r) => setTimeout(r, 1000));
  const baseFrom = Date.now();
  await new Promise((r) => setTimeout(r, 5000));
  const baseTo = Date.now();

  // 4. Collect down to (1 - EVICT) of the store, reads going on.
  global.gc?.();
  // Targets count each blob's bytes plus BLOB_OVERHEAD_BYTES, as the budget does.
  const usage = daemon.casBase.usage();
  const target = Math.floor((usage.bytes + usage.count * BLOB_OVERHEAD_BYTES) * (1 - EVICT));
  const RESOLUTION_MS = 5;
  const loop = monitorEventLoopDelay({ resolution: RESOLUTION_MS });
  const mem0 = process.memoryUsage();
  let peakRss = mem0.rss;
  let peakHeap = mem0.heapUsed;
  const sampler = setInterval(() => {
    const m = process.memoryUsage();
    peakRss = Math.max(peakRss, m.rss);
    peakHeap = Math.max(peakHeap, m.heapUsed);
  }, 20);
  loop.enable();
  const clients = connect(address);
  const gcFrom = Date.now();
  const summary = await new Promise((resolve, reject) => {
    let s;
    const stream = clients.admin.CollectGarbage({ targetBytes: target });
    stream.on('data', (m) => {
      const update = gcUpdateFromMessage(m);
      if (update && 'summary' in update) s = update.summary;
    });
    stream.on('error', reject);
    stream.on('end', () => resolve(s));
  });
  const gcTo = Date.now();
  loop.disable();
  clearInterval(sampler);
  clients.close();
  reader.postMessage('stop');
  await new Promise((r) => reader.once('message', (m) => m === 'done' && r()) && setTimeout(r, 5000));
  await reader.terminate();

  result.collection = {
    seconds: summary.durationMs / 1000,
    evictedBlobs: summary.freedBlobs,
    evictedBytes: summary.freedBytes,
    before: summary.before,
    after: summary.after,
    blobsPerSecond: summary.freedBlobs / (summary.durationMs / 1000),
  };
  result.daemonMemory = {
    rssBeforeMiB: mem0.rss / 2 ** 20,
    peakRssMiB: peakRss / 2 ** 20,
    heapBeforeMiB: mem0.heapUsed / 2 ** 20,
    peakHeapMiB: peakHeap / 2 ** 20,
    note: 'RSS includes LMDB pages mapped and touched by the scan (file-backed, reclaimable); the heap is what the collector allocates',
  };
  // The histogram counts the sampling interval itself: what exceeds it is the delay.
  const delay = (ns) => Math.max(0, ns / 1e6 - RESOLUTION_MS);
  result.eventLoopDelayDuringCollection = { p50Ms: delay(loop.percentile(50)), p99Ms: delay(loop.percentile(99)), maxMs: delay(loop.max) };
  result.reads = { alone: summarise(baseFrom, baseTo), duringCollection: summarise(gcFrom, gcTo) };
  await daemon.stop();

  if (args.json) process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  else {
    const c = result.collection;
    const r = result.reads;
    const m = result.daemonMemory;
    const e = result.eventLoopDelayDuringCollection;
    process.stdout.write(
      [
        `host: ${result.host.cpus} × ${result.host.cpuModel}, ${mib(result.host.memBytes)}, node ${result.host.node}`,
        `store: ${N.toLocaleString('en-US')} blobs of ${SIZE} B (inline in LMDB), access times spread over ${DAYS} days; filled in ${result.fill.seconds.toFixed(1)} s`,
        `collection (Admin.CollectGarbage, LRU down to ${Math.round((1 - EVICT) * 100)}%): ${c.evictedBlobs.toLocaleString('en-US')} blobs, ${mib(c.evictedBytes)} in ${c.seconds.toFixed(2)} s (${Math.round(c.blobsPerSecond).toLocaleString('en-US')} blobs/s); ${c.before.count.toLocaleString('en-US')} → ${c.after.count.toLocaleString('en-US')} blobs`,
        `daemon memory: heap ${m.heapBeforeMiB.toFixed(0)} → peak ${m.peakHeapMiB.toFixed(0)} MiB; RSS ${m.rssBeforeMiB.toFixed(0)} → peak ${m.peakRssMiB.toFixed(0)} MiB (RSS counts LMDB's mapped pages)`,
        `daemon event-loop delay during the collection: p50 ${e.p50Ms.toFixed(1)} ms, p99 ${e.p99Ms.toFixed(1)} ms, max ${e.maxMs.toFixed(1)} ms`,
        `reads (BatchReadBlobs + FindMissingBlobs of 100 blobs, from a worker thread):`,
        `  alone:             ${Math.round(r.alone.blobsPerSecond).toLocaleString('en-US')} blobs/s, p50 ${r.alone.p50Ms.toFixed(1)} ms, p99 ${r.alone.p99Ms.toFixed(1)} ms, max ${r.alone.maxMs.toFixed(1)} ms, ${r.alone.misses} not found`,
        `  during collection: ${Math.round(r.duringCollection.blobsPerSecond).toLocaleString('en-US')} blobs/s, p50 ${r.duringCollection.p50Ms.toFixed(1)} ms, p99 ${r.duringCollection.p99Ms.toFixed(1)} ms, max ${r.duringCollection.maxMs.toFixed(1)} ms, ${r.duringCollection.misses} not found (the blobs read are among those that stay)`,
        '',
      ].join('\n'),
    );
  }
} finally {
  if (!args.keep) rmSync(dataDir, { recursive: true, force: true });
  else log(`data dir kept: ${dataDir}`);
}
