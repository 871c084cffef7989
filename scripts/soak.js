#!/usr/bin/env node
// Soak test (issue 19): a reexec daemon, as its own process, under mixed traffic for a while —
// FindMissingBlobs, BatchUpdateBlobs, BatchReadBlobs, ByteStream writes and reads, action
// cache updates and lookups, Execute (fresh and cached), and bad inputs a careless or hostile
// client sends. Every `--sample-every` it samples the daemon's anonymous memory (RssAnon: the
// heap and buffers; LMDB's map is file-backed and left out), its open file descriptors, and
// per call type the p50/p99 latency and unexpected errors. At the end every acknowledged blob
// must still be there and hash right, every action result must be served, and the verdict
// fails when memory or descriptors grow without bound (scripts/lib/reliability.js:
// growthVerdict — the second half of the run against the first, and the slope over the
// second half), when any call failed unexpectedly, or when a bad input got anything but a
// proper refusal.
//
//   npm run build && node scripts/soak.js [--duration 1h] [--sample-every 30s] [--concurrency 4]
//                                         [--json] [--report FILE] [--no-execute]
//
// Exit code 0: passed; 1: failed (the reasons are printed); 2: could not run.
import { randomBytes } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import { scratchDir } from './lib/dist.js';
import { traffic } from './lib/traffic.js';
import { BUSYBOX, durationMs, fmtMiB, growthVerdict, hasBubblewrap, loadDist, makeBusyboxRoot, MiB, processFigures, quantile, startDaemon } from './lib/reliability.js';

const { values: args } = parseArgs({
  options: {
    duration: { type: 'string', default: '10m' },
    'sample-every': { type: 'string', default: '30s' },
    concurrency: { type: 'string', default: '4' },
    json: { type: 'boolean', default: false },
    report: { type: 'string' },
    'no-execute': { type: 'boolean', default: false },
    /** More daemon settings (YAML mappings, merged over the soak's own), e.g. "limits: {max-calls-per-client: 10}". */
    'daemon-config': { type: 'string', default: '' },
    'node-options': { type: 'string', default: '' },
  },
});
const DURATION = durationMs(args.duration);
const SAMPLE_EVERY = durationMs(args['sample-every']);
const CONCURRENCY = Number(args.concurrency);
const log = (s) => process.stderr.write(`${s}\n`);
const EXECUTE = !args['no-execute'];
if (EXECUTE && (!BUSYBOX || !hasBubblewrap())) {
  log(`soak: Execute needs ${!BUSYBOX ? 'busybox-static' : 'bubblewrap'} (apt-get install busybox-static bubblewrap), or pass --no-execute`);
  process.exit(2);
}

const dist = await loadDist();
const { connect, call, treeFromDirectory, re } = dist;
const tmp = scratchDir('reexec-soak-');
const daemon = await startDaemon({
  dataDir: join(tmp, 'data'),
  // Finished operations are kept for execution.operation-retention (1 h by default): over an
  // hour that bounded cache would look like a leak, so the soak keeps them 5 minutes and sees
  // its plateau (--daemon-config overrides).
  configYaml: `${args['daemon-config']}\n`.includes('execution:') ? `${args['daemon-config']}\n` : `execution: {enabled: ${EXECUTE}, operation-retention: 5m}\n${args['daemon-config']}\n`,
  env: args['node-options'] ? { NODE_OPTIONS: args['node-options'] } : {},
});
const clients = connect(daemon.address);

// ── bookkeeping ──────────────────────────────────────────────────────────────────────────
/** Per call type: latencies (ms) of the current window, and counts over the whole run. */
const calls = new Map();
const stat = (name) => {
  let s = calls.get(name);
  if (!s) calls.set(name, (s = { window: [], total: 0, errors: 0, windowErrors: 0, lastError: '' }));
  return s;
};
async function timed(name, fn) {
  const s = stat(name);
  const t0 = performance.now();
  try {
    const r = await fn();
    s.window.push(performance.now() - t0);
    s.total++;
    return r;
  } catch (err) {
    s.total++;
    s.errors++;
    s.windowErrors++;
    s.lastError = `${err.code ?? ''} ${err.details ?? err.message}`.trim();
    return undefined;
  }
}
/** Blobs acknowledged (digests), action results stored, executions finished. */
const acked = [];
const ackedBytes = { n: 0 };
const results = [];
const bad = { tried: 0, refusedProperly: 0, wrong: [] };
const executions = { run: 0, cached: 0, wrongOutput: 0 };

const t = traffic(clients, dist);
const { digestOf, bsWrite, bsRead } = t;
const fail = (what) => {
  throw Object.assign(new Error(what), { details: what });
};

// ── the traffic ──────────────────────────────────────────────────────────────────────────
const randomSize = (max) => 1 + Math.floor(Math.random() ** 3 * max);

async function batchUpdate() {
  const blobs = Array.from({ length: 20 + Math.floor(Math.random() * 40) }, () => randomBytes(randomSize(16 * 1024)));
  const res = await call(clients.cas, 'BatchUpdateBlobs', { requests: blobs.map((b) => ({ digest: digestOf(b), data: b })) });
  res.responses.forEach((r, i) => {
    if (r.status?.code) fail(`BatchUpdateBlobs: blob ${i}: ${r.status.code} ${r.status.message}`);
    acked.push(digestOf(blobs[i]));
    ackedBytes.n += blobs[i].length;
  });
}

const pick = (n) => Array.from({ length: Math.min(n, acked.length) }, () => acked[Math.floor(Math.random() * acked.length)]);

async function findMissing() {
  const present = pick(100);
  const absent = Array.from({ length: 50 }, () => digestOf(randomBytes(32)));
  const res = await call(clients.cas, 'FindMissingBlobs', { blobDigests: [...present, ...absent] });
  const missing = new Set(res.missingBlobDigests.map((d) => d.hash));
  for (const d of present) if (missing.has(d.hash)) fail(`FindMissingBlobs says acknowledged blob ${d.hash}/${d.sizeBytes} is missing`);
  if (missing.size < absent.length) fail('FindMissingBlobs found blobs nobody uploaded');
}

async function batchRead() {
  const want = pick(30).filter((d) => Number(d.sizeBytes) < 64 * 1024);
  const res = await call(clients.cas, 'BatchReadBlobs', { digests: want });
  for (const r of res.responses) {
    if (r.status?.code) fail(`BatchReadBlobs: ${r.digest.hash}: ${r.status.code} ${r.status.message}`);
    if (digestOf(Buffer.from(r.data)).hash !== r.digest.hash) fail(`BatchReadBlobs: ${r.digest.hash} came back with other bytes`);
  }
}

async function byteStream() {
  const data = randomBytes(randomSize(2 * MiB) + 64 * 1024);
  const d = digestOf(data);
  const res = await bsWrite(data, d);
  if (Number(res.committedSize) !== data.length) fail(`ByteStream.Write committed ${res.committedSize} of ${data.length}`);
  acked.push(d);
  ackedBytes.n += data.length;
  const back = await bsRead(d);
  if (!back.equals(data)) fail(`ByteStream.Read of ${d.hash} returned other bytes`);
}

async function actionCache() {
  const out = randomBytes(randomSize(4096));
  const res = await call(clients.cas, 'BatchUpdateBlobs', { requests: [{ digest: digestOf(out), data: out }] });
  if (res.responses[0].status?.code) fail(`BatchUpdateBlobs (stdout): ${res.responses[0].status.message}`);
  acked.push(digestOf(out));
  const action = digestOf(randomBytes(64));
  const result = { exitCode: 0, stdoutDigest: digestOf(out) };
  await call(clients.actionCache, 'UpdateActionResult', { actionDigest: action, actionResult: result });
  results.push(action);
  const got = await call(clients.actionCache, 'GetActionResult', { actionDigest: action });
  if (got.stdoutDigest?.hash !== result.stdoutDigest.hash) fail('GetActionResult returned another result');
}

let root;
const actionFor = (argv, platform) => t.actionFor(root, argv, platform ? { platform } : {});
const executeOnce = (d) => t.execute(d);

async function execute() {
  // Two in three fresh; the rest repeat one of ten earlier actions (cache hits).
  const n = Math.random() < 0.67 ? randomBytes(6).toString('hex') : String(Math.floor(Math.random() * 10));
  const d = await actionFor(['sh', '-c', `echo soak ${n} > out.txt; echo ${n}`]);
  const r = await executeOnce(d);
  if (r.status?.code) fail(`Execute: ${r.status.code} ${r.status.message}`);
  if (r.result.exitCode !== 0) fail(`Execute: exit ${r.result.exitCode}`);
  r.cachedResult ? executions.cached++ : executions.run++;
  const bytes = await t.outputFile(r, 'out.txt');
  if (!bytes || Buffer.from(bytes).toString() !== `soak ${n}\n`) {
    executions.wrongOutput++;
    fail(`Execute: out.txt of "${n}" is ${JSON.stringify(bytes && Buffer.from(bytes).toString())}`);
  }
}

function getTree(rootDigest) {
  return new Promise((resolve, reject) => {
    const s = clients.cas.GetTree({ rootDigest });
    s.on('data', () => undefined);
    s.on('error', reject);
    s.on('end', () => resolve());
  });
}

/** Bad inputs: each must be refused with a proper status (not OK, not INTERNAL or UNKNOWN). */
const BAD = [
  () => call(clients.cas, 'FindMissingBlobs', { blobDigests: [{ hash: 'zz', sizeBytes: 1 }] }),
  () => call(clients.cas, 'FindMissingBlobs', { blobDigests: [{ hash: digestOf(randomBytes(8)).hash, sizeBytes: -5 }] }),
  async () => {
    const data = randomBytes(100);
    const res = await call(clients.cas, 'BatchUpdateBlobs', { requests: [{ digest: digestOf(randomBytes(100)), data }] });
    return res.responses[0].status;
  },
  async () => (await call(clients.cas, 'BatchReadBlobs', { digests: [digestOf(randomBytes(10))] })).responses[0].status,
  () => bsRead({ hash: 'not-a-hash', sizeBytes: 3 }),
  () => bsRead(digestOf(randomBytes(20))),
  () => bsWrite(randomBytes(1000), { hash: digestOf(randomBytes(1000)).hash, sizeBytes: 1000 }),
  () => bsWrite(randomBytes(1000), { hash: digestOf(randomBytes(10)).hash, sizeBytes: 2000 }),
  () => call(clients.actionCache, 'GetActionResult', { actionDigest: digestOf(randomBytes(30)) }),
  () => call(clients.actionCache, 'UpdateActionResult', { actionDigest: { hash: 'x', sizeBytes: 1 }, actionResult: { exitCode: 0 } }),
  () => getTree({ hash: '0'.repeat(63), sizeBytes: 10 }),
  () => getTree(digestOf(randomBytes(40))),
  ...(EXECUTE
    ? [
        () => executeOnce(digestOf(randomBytes(50))),
        async () => executeOnce(await actionFor(['true'], [['OSFamily', 'linux'], ['no-such-property', 'x']])),
        async () => executeOnce(await actionFor(['/no/such/tool'])).then((r) => (r.result?.exitCode ? { code: 3 } : r.status)),
      ]
    : []),
  () => call(clients.operations, 'GetOperation', { name: 'operations/not-one-of-ours' }),
];
async function badInput() {
  const i = Math.floor(Math.random() * BAD.length);
  bad.tried++;
  let code = 0;
  let message = '';
  try {
    const r = await BAD[i]();
    code = r?.code ?? 0;
    message = r?.message ?? '';
  } catch (err) {
    code = err.code ?? -1;
    message = err.details ?? err.message;
  }
  const internal = code === grpc.status.INTERNAL || code === grpc.status.UNKNOWN || code === -1;
  if (code !== 0 && !internal) bad.refusedProperly++;
  else if (bad.wrong.length < 20) bad.wrong.push({ input: i, code, message: String(message).slice(0, 200) });
}

const MIX = [
  ['FindMissingBlobs', findMissing, 30],
  ['BatchUpdateBlobs', batchUpdate, 20],
  ['BatchReadBlobs', batchRead, 20],
  ['ByteStream', byteStream, 6],
  ['ActionCache', actionCache, 15],
  ...(EXECUTE ? [['Execute', execute, 10]] : []),
  ['bad input', badInput, 8],
];
const WEIGHT = MIX.reduce((a, m) => a + m[2], 0);
function chooseOp() {
  let r = Math.random() * WEIGHT;
  for (const m of MIX) if ((r -= m[2]) < 0) return m;
  return MIX[0];
}

// ── the run ──────────────────────────────────────────────────────────────────────────────
const started = Date.now();
const samples = [];
const takeSample = () => {
  const fig = processFigures(daemon.pid);
  const perCall = {};
  for (const [name, s] of calls) {
    perCall[name] = { calls: s.window.length, p50Ms: round(quantile(s.window, 0.5)), p99Ms: round(quantile(s.window, 0.99)), errors: s.windowErrors };
    s.window = [];
    s.windowErrors = 0;
  }
  const sample = { atSeconds: Math.round((Date.now() - started) / 1000), ...fig, load: loadavg()[0], perCall };
  samples.push(sample);
  const brief = Object.entries(perCall)
    .map(([n, c]) => `${n} ${c.calls}${Number.isFinite(c.p99Ms) ? ` p50 ${c.p50Ms} p99 ${c.p99Ms} ms` : ''}${c.errors ? ` ${c.errors} ERR` : ''}`)
    .join(' · ');
  log(`[${String(sample.atSeconds).padStart(5)} s] anon ${fmtMiB(fig.rssAnonBytes)} rss ${fmtMiB(fig.rssBytes)} fds ${fig.fds} load ${sample.load.toFixed(1)} | ${brief}`);
};
const round = (x) => (Number.isFinite(x) ? Math.round(x * 10) / 10 : null);

let crashed = false;
daemon.exited.then(() => (crashed = true));
try {
  const tree = EXECUTE ? await treeFromDirectory(makeBusyboxRoot()) : undefined;
  if (tree) {
    await t.uploadTree(tree);
    root = tree.root.toProto();
  }
  log(`soak: ${args.duration} of mixed traffic, ${CONCURRENCY} clients, a sample every ${args['sample-every']}, daemon pid ${daemon.pid}${EXECUTE ? '' : ' (no Execute)'}`);
  takeSample();
  const timer = setInterval(takeSample, SAMPLE_EVERY);
  const deadline = started + DURATION;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (Date.now() < deadline && !crashed) {
        const [name, fn] = chooseOp();
        await timed(name, fn);
      }
    }),
  );
  clearInterval(timer);
  if (!crashed) takeSample();
} catch (err) {
  log(`soak: could not run: ${err.stack ?? err}`);
  await daemon.kill();
  rmSync(tmp, { recursive: true, force: true });
  process.exit(2);
}

// ── the checks ───────────────────────────────────────────────────────────────────────────
const reasons = [];
let lost = 0;
let corrupt = 0;
let acLost = 0;
if (crashed) reasons.push(`the daemon died: ${daemon.output().slice(-2000)}`);
else {
  for (let i = 0; i < acked.length; i += 5000) {
    const res = await call(clients.cas, 'FindMissingBlobs', { blobDigests: acked.slice(i, i + 5000) });
    lost += res.missingBlobDigests.length;
  }
  // Read back a sample whole (the read-back after each ByteStream write checked those).
  for (const d of pick(300)) {
    const data = await bsRead(d).catch(() => undefined);
    if (!data || digestOf(data).hash !== d.hash) corrupt++;
  }
  for (let i = 0; i < results.length; i += 64) {
    const found = await Promise.all(
      results.slice(i, i + 64).map((a) =>
        call(clients.actionCache, 'GetActionResult', { actionDigest: a }).then(
          () => true,
          () => false,
        ),
      ),
    );
    acLost += found.filter((ok) => !ok).length;
  }
}
const memory = growthVerdict(
  samples.map((s) => ({ x: s.atSeconds * 1000, y: s.rssAnonBytes })),
  { absolute: 48 * MiB, relative: 0.25, perHour: 64 * MiB },
);
const fds = growthVerdict(
  samples.map((s) => ({ x: s.atSeconds * 1000, y: s.fds })),
  { absolute: 16, relative: 0.2, perHour: 32 },
);
const errors = [...calls].filter(([, s]) => s.errors > 0).map(([n, s]) => `${n}: ${s.errors} error(s), last: ${s.lastError}`);
if (errors.length) reasons.push(`calls failed: ${errors.join('; ')}`);
if (lost) reasons.push(`${lost} acknowledged blob(s) are missing`);
if (corrupt) reasons.push(`${corrupt} blob(s) read back with other bytes`);
if (acLost) reasons.push(`${acLost} action result(s) are no longer served`);
if (bad.wrong.length) reasons.push(`${bad.tried - bad.refusedProperly} bad input(s) were not refused properly: ${JSON.stringify(bad.wrong.slice(0, 5))}`);
if (memory.growing) reasons.push(`anonymous memory grows: ${fmtMiB(memory.firstHalfMean)} → ${fmtMiB(memory.secondHalfMean)}, still ${fmtMiB(memory.slopePerHour)}/h`);
if (fds.growing) reasons.push(`file descriptors grow: ${fds.firstHalfMean.toFixed(0)} → ${fds.secondHalfMean.toFixed(0)}, still ${fds.slopePerHour.toFixed(0)}/h`);

const totals = Object.fromEntries([...calls].map(([n, s]) => [n, { calls: s.total, errors: s.errors }]));
const report = {
  passed: reasons.length === 0,
  reasons,
  durationSeconds: Math.round((Date.now() - started) / 1000),
  concurrency: CONCURRENCY,
  calls: totals,
  acknowledged: { blobs: acked.length, bytes: ackedBytes.n, lost, readBackCorrupt: corrupt, actionResults: results.length, actionResultsLost: acLost },
  executions,
  badInputs: { tried: bad.tried, refusedProperly: bad.refusedProperly, kinds: BAD.length, wrong: bad.wrong },
  memory: { ...memory, unit: 'bytes (RssAnon)' },
  fds,
  samples,
};
clients.close();
const stopped = crashed ? { code: null } : await daemon.stop();
if (!crashed && stopped.code !== 0) reasons.push(`the daemon did not stop cleanly (exit ${stopped.code})`);
const errorLines = daemon
  .output()
  .split('\n')
  .filter((l) => l.includes('"level":"error"'));
if (errorLines.length) reasons.push(`the daemon logged ${errorLines.length} error line(s): ${errorLines.slice(0, 3).join(' | ')}`);
report.passed = reasons.length === 0;
rmSync(tmp, { recursive: true, force: true });

const first = samples[Math.floor(samples.length * 0.2)] ?? samples[0];
const last = samples[samples.length - 1];
log('');
log(`soak ${report.passed ? 'PASSED' : 'FAILED'} after ${report.durationSeconds} s`);
log(`  calls: ${Object.entries(totals).map(([n, t]) => `${n} ${t.calls}${t.errors ? ` (${t.errors} errors)` : ''}`).join(', ')}`);
log(`  acknowledged ${acked.length} blobs (${fmtMiB(ackedBytes.n)}) and ${results.length} action results: ${lost} lost, ${corrupt} corrupt of 300 read back, ${acLost} results lost`);
if (EXECUTE) log(`  executions: ${executions.run} run, ${executions.cached} from the cache, ${executions.wrongOutput} wrong outputs`);
log(`  bad inputs: ${bad.tried} tried (${BAD.length} kinds), ${bad.refusedProperly} refused with a proper status`);
if (first && last) {
  log(`  anonymous memory ${fmtMiB(first.rssAnonBytes)} → ${fmtMiB(last.rssAnonBytes)} (after warm-up; halves ${fmtMiB(memory.firstHalfMean)} / ${fmtMiB(memory.secondHalfMean)}, slope ${fmtMiB(memory.slopePerHour)}/h): ${memory.growing ? 'GROWING' : 'flat'}`);
  log(`  file descriptors ${first.fds} → ${last.fds} (halves ${fds.firstHalfMean.toFixed(1)} / ${fds.secondHalfMean.toFixed(1)}, slope ${fds.slopePerHour.toFixed(1)}/h): ${fds.growing ? 'GROWING' : 'flat'}`);
}
for (const r of reasons) log(`  ✗ ${r}`);
if (args.report) writeFileSync(args.report, JSON.stringify(report, null, 2) + '\n');
if (args.json) process.stdout.write(JSON.stringify(report, null, 2) + '\n');
process.exit(report.passed ? 0 : 1);
