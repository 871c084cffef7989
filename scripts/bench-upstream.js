#!/usr/bin/env node
// Benchmark of a reexec in front of an upstream (README "Behind a cluster"; not a test): what
// a hit costs served from the workstation's own store, through it from the upstream (a local
// miss the upstream answers, copied locally on the way), and straight from the upstream (the
// baseline). Two temporary daemons in this process on loopback: an upstream holding action
// results (one 4 KiB output each) and a workstation in front of it. A hit is GetActionResult
// then BatchReadBlobs of its output. First RUNS fresh entries through the workstation
// (read through), then the same entries again (local hits), each interleaved with a direct
// hit of another entry on the upstream. Reports medians and ratios against the direct baseline, measured in the same run.
//
//   npm run build && node scripts/bench-upstream.js [--runs 200] [--json]
import { rmSync } from 'node:fs';
import { loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { fromDist, scratchDir } from './lib/dist.js';

const { values: args } = parseArgs({ options: { runs: { type: 'string', default: '200' }, json: { type: 'boolean', default: false } } });
const RUNS = Number(args.runs);
if (!Number.isInteger(RUNS) || RUNS < 1) {
  process.stderr.write('bench-upstream: --runs takes a whole number from 1\n');
  process.exit(2);
}
const { Daemon, scratchDaemonConfig, DEFAULT_UPSTREAM, connect, call, Digest, median, silentLogger } = await fromDist(
  'bench-upstream',
  'daemon/daemon.js',
  'config/config.js',
  'client/reapi-client.js',
  'digest/digest.js',
  'bench/stats.js',
  'util/logger.js',
);

const upDir = scratchDir('reexec-bench-upstream-');
const wsDir = scratchDir('reexec-bench-workstation-');
const upConfig = scratchDaemonConfig(upDir);
upConfig.execution.enabled = false;
const upstream = await Daemon.start(upConfig, silentLogger);
const wsConfig = scratchDaemonConfig(wsDir);
wsConfig.execution.enabled = false;
wsConfig.upstream = { ...DEFAULT_UPSTREAM, url: `grpc://${upstream.addresses[0]}`, push: false };
const workstation = await Daemon.start(wsConfig, silentLogger);
const up = connect(upstream.addresses[0]);
const ws = connect(workstation.addresses[0]);
try {
  // Entries: RUNS read through (then read locally), 2 × RUNS direct, 10 for warming up.
  const total = 3 * RUNS + 10;
  const entries = [];
  for (let i = 0; i < total; i += 100) {
    const batch = [];
    for (let j = i; j < Math.min(total, i + 100); j++) {
      const output = Buffer.alloc(4096, j % 251);
      output.writeUInt32LE(j, 0);
      const action = Digest.compute(Buffer.from(`bench action ${j} ${process.pid}`));
      batch.push({ output, outDigest: Digest.compute(output), action });
    }
    await call(up.cas, 'BatchUpdateBlobs', { requests: batch.map((e) => ({ digest: e.outDigest.toProto(), data: e.output })) });
    for (const e of batch) {
      await call(up.actionCache, 'UpdateActionResult', { actionDigest: e.action.toProto(), actionResult: { exitCode: 0, outputFiles: [{ path: 'out', digest: e.outDigest.toProto() }] } });
    }
    entries.push(...batch);
  }
  let next = 0;
  const hit = async (clients, e) => {
    const started = process.hrtime.bigint();
    const result = await call(clients.actionCache, 'GetActionResult', { actionDigest: e.action.toProto() });
    const blobs = await call(clients.cas, 'BatchReadBlobs', { digests: [result.outputFiles[0].digest] });
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    if (!Buffer.from(blobs.responses[0].data).equals(e.output)) throw new Error('a hit returned the wrong bytes');
    return ms;
  };
  // Phase 1: hits read through the workstation, interleaved with direct hits on the upstream.
  // Phase 2 (once what phase 1 copied is committed locally): the same entries again, now
  // local hits, interleaved with more direct hits.
  const through = [];
  const local = [];
  const direct = [];
  const seen = [];
  for (let i = 0; i < 5 + RUNS; i++) {
    const e = entries[next++];
    const t = await hit(ws, e);
    const d = await hit(up, entries[next++]);
    if (i >= 5) {
      through.push(t);
      direct.push(d);
      seen.push(e);
    }
  }
  const load = loadavg()[0];
  // The local copies are committed behind the answers: wait until the store holds them all.
  while (!seen.every((e) => workstation.casBase.record(e.outDigest))) await new Promise((r) => setTimeout(r, 20));
  for (const e of seen) {
    local.push(await hit(ws, e));
    direct.push(await hit(up, entries[next++]));
  }
  const stats = workstation.storage.upstream.stats;
  const m = { through: median(through), local: median(local), direct: median(direct) };
  const out = {
    runs: RUNS,
    loadAverage: [load, loadavg()[0]].map((x) => Number(x.toFixed(1))),
    medianMs: Object.fromEntries(Object.entries(m).map(([k, v]) => [k, Number(v.toFixed(3))])),
    ratios: { localVsDirect: m.local / m.direct, throughVsDirect: m.through / m.direct, throughVsLocal: m.through / m.local },
    lookups: { ac: stats.ac, cas: stats.cas },
  };
  if (args.json) process.stdout.write(`${JSON.stringify(out)}\n`);
  else {
    process.stdout.write(
      `an action-cache hit and its 4 KiB output (GetActionResult + BatchReadBlobs), median of ${RUNS} each, interleaved (load ${out.loadAverage.join(' → ')}):\n` +
        `  straight from the upstream (baseline)       ${m.direct.toFixed(2)} ms\n` +
        `  workstation, local hit                      ${m.local.toFixed(2)} ms   (${out.ratios.localVsDirect.toFixed(2)}× the baseline)\n` +
        `  workstation, read through from upstream     ${m.through.toFixed(2)} ms   (${out.ratios.throughVsDirect.toFixed(2)}× the baseline, ${out.ratios.throughVsLocal.toFixed(2)}× a local hit)\n`,
    );
  }
} finally {
  up.close();
  ws.close();
  await workstation.stop();
  await upstream.stop();
  rmSync(upDir, { recursive: true, force: true });
  rmSync(wsDir, { recursive: true, force: true });
}
