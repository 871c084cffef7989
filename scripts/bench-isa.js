#!/usr/bin/env node
// Benchmark of foreign-ISA execution (not a test): the same small shell workload as a REAPI
// action on every ISA this host offers, native x86-64 (or whatever the host is) being the
// reference, each run in an input root holding Debian's busybox-static for that ISA (the same
// Debian version for all). Reports the median end-to-end latency of the action (Execute to
// result, as a client sees it) per ISA and its ratio to native, measured in the same run, plus
// the median time the action spent executing as reexec reports it (ExecutedActionMetadata).
// Runs round-robin over the ISAs so that load changes during the run hit them all alike.
//
//   npm run build && node scripts/bench-isa.js [--runs 15] [--loop 2000] [--isa aarch64,s390x]
//                                              [--cache-dir DIR] [--json]
//
// Starts a temporary reexec daemon in this process (from dist/: build first; worker pools
// "auto": the host's ISA, x86-32 under linux32 on x86-64, and every ISA QEMU user mode is
// registered for with binfmt_misc's F flag), data dir removed afterwards. The busybox binaries
// are fetched once with apt-get under a private apt state (scripts/lib/foreign-busybox.js) and
// kept in --cache-dir (default $XDG_CACHE_HOME/reexec-test, shared with the tests). ISAs the
// host does not offer, or without a binary, are listed as skipped with the reason.
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fromDist, scratchDir } from './lib/dist.js';
import { debianBusybox, DOWNLOAD_CACHE } from './lib/foreign-busybox.js';

const { values: args } = parseArgs({
  options: {
    runs: { type: 'string', default: '15' },
    loop: { type: 'string', default: '2000' },
    isa: { type: 'string' },
    'cache-dir': { type: 'string', default: DOWNLOAD_CACHE },
    json: { type: 'boolean', default: false },
  },
});
const RUNS = Number(args.runs);
const LOOP = Number(args.loop);
if (!Number.isInteger(RUNS) || RUNS < 1 || !Number.isInteger(LOOP) || LOOP < 0) {
  process.stderr.write('bench-isa: --runs takes a whole number from 1, --loop one from 0\n');
  process.exit(2);
}

const { Daemon, scratchDaemonConfig, connect, call, treeFromDirectory, Digest, re, uploadBlobs, execute, median, hostIsa, silentLogger } = await fromDist(
  'bench-isa',
  'daemon/daemon.js',
  'config/config.js',
  'client/reapi-client.js',
  'client/merkle.js',
  'digest/digest.js',
  'proto.js',
  'bench/exec.js',
  'bench/stats.js',
  'scheduler/platform.js',
  'util/logger.js',
);

const log = (s) => process.stderr.write(`${s}\n`);

// ISA (BuildStream's name) → Debian architecture of its busybox-static.
const DEB_ARCH = { 'x86-64': 'amd64', 'x86-32': 'i386', aarch64: 'arm64', aarch32: 'armhf', 'power-isa-le': 'ppc64el', s390x: 's390x' };
const native = hostIsa();
const wanted = args.isa ? args.isa.split(',').map((s) => s.trim()).filter(Boolean) : Object.keys(DEB_ARCH).filter((i) => i !== native);
const WORKLOAD = `i=0; while [ $i -lt ${LOOP} ]; do i=$((i+1)); done; echo a b c | tr " " "\\n" | sort | wc -l`;
const APPLETS = ['sh', 'tr', 'sort', 'wc', 'uname'];

/** An input root: usr/bin/busybox, the applets the workload uses as relative symlinks, bin → usr/bin. */
function makeRoot(busybox) {
  const root = mkdtempSync(join(tmpdir(), 'reexec-bench-isa-root-'));
  mkdirSync(join(root, 'usr', 'bin'), { recursive: true });
  copyFileSync(busybox, join(root, 'usr', 'bin', 'busybox'));
  chmodSync(join(root, 'usr', 'bin', 'busybox'), 0o755);
  for (const a of APPLETS) symlinkSync('busybox', join(root, 'usr', 'bin', a));
  symlinkSync('usr/bin', join(root, 'bin'));
  for (const d of ['dev', 'proc', 'tmp']) mkdirSync(join(root, d));
  return root;
}

const tsMs = (t) => (t ? Number(t.seconds ?? 0) * 1000 + Number(t.nanos ?? 0) / 1e6 : NaN);

const dataDir = scratchDir('reexec-bench-isa-');
const roots = [];
const onSignal = () => {
  rmSync(dataDir, { recursive: true, force: true });
  for (const r of roots) rmSync(r, { recursive: true, force: true });
  process.exit(130);
};
process.once('SIGINT', onSignal);
process.once('SIGTERM', onSignal);

let daemon;
let clients;
try {
  const config = scratchDaemonConfig(dataDir);
  config.execution.enabled = true;
  config.execution.pools = 'auto';
  daemon = await Daemon.start(config, silentLogger);
  clients = connect(daemon.addresses[0]);
  const support = daemon.execution.support;

  // What to run: native first (the reference), then every wanted ISA the host offers.
  const cases = [];
  const skipped = [];
  for (const isa of [native, ...wanted.filter((i) => i !== native)]) {
    const s = support.find((x) => x.isa === isa);
    const deb = DEB_ARCH[isa];
    if (!s || !s.ok) {
      skipped.push({ isa, why: s ? s.detail : 'not an ISA this host can run' });
      continue;
    }
    if (!deb) {
      skipped.push({ isa, why: 'no Debian busybox-static for it' });
      continue;
    }
    const bb = debianBusybox(deb, args['cache-dir']);
    if (!bb.path) {
      skipped.push({ isa, why: bb.why });
      continue;
    }
    const root = makeRoot(bb.path);
    roots.push(root);
    const tree = await treeFromDirectory(root);
    await uploadBlobs(clients, '', tree.blobs.values(), 0);
    cases.push({ isa, how: s.how, deb, root: tree.root, e2e: [], exec: [] });
  }
  if (cases[0]?.isa !== native) throw new Error(`the host's own ISA (${native}) cannot run the workload: ${skipped[0]?.why}`);

  let salt = 0;
  const upload = async (c, argv) => {
    const platform = { properties: [{ name: 'ISA', value: c.isa }, { name: 'OSFamily', value: 'linux' }] };
    const command = re.Command.encode({
      arguments: argv,
      environmentVariables: [
        { name: 'PATH', value: '/usr/bin:/bin' },
        { name: 'REEXEC_BENCH', value: `${process.pid}/${Date.now()}/${salt++}` },
      ],
      platform,
    }).finish();
    const commandDigest = Digest.compute(command);
    const action = re.Action.encode({ commandDigest: commandDigest.toProto(), inputRootDigest: c.root.toProto(), platform, doNotCache: true }).finish();
    const actionDigest = Digest.compute(action);
    await uploadBlobs(clients, '', [{ digest: commandDigest, data: command }, { digest: actionDigest, data: action }], 0);
    return actionDigest;
  };
  const stdoutOf = async (r) => {
    const d = r.result?.stdoutDigest;
    if (r.result?.stdoutRaw?.length) return Buffer.from(r.result.stdoutRaw).toString();
    if (!d || Number(d.sizeBytes) === 0) return '';
    const got = await call(clients.cas, 'BatchReadBlobs', { instanceName: '', digests: [d] });
    return Buffer.from(got.responses[0].data).toString();
  };
  const run = async (c, argv) => {
    const digest = await upload(c, argv);
    const t0 = process.hrtime.bigint();
    const r = await execute(clients, '', digest);
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    if ((r.status?.code ?? 0) !== 0 || r.result?.exitCode !== 0) throw new Error(`${c.isa}: ${argv.join(' ')} failed: ${r.status?.message || `exit code ${r.result?.exitCode}`}`);
    const m = r.result.executionMetadata;
    return { ms, execMs: tsMs(m?.executionCompletedTimestamp) - tsMs(m?.executionStartTimestamp), stdout: await stdoutOf(r), worker: m?.worker };
  };

  // Warm-up, and the checks: what uname -m says in there, and the workload's answer.
  for (const c of cases) {
    const u = await run(c, ['uname', '-m']);
    c.uname = u.stdout.trim();
    c.worker = u.worker;
    const w = await run(c, ['sh', '-c', WORKLOAD]);
    if (w.stdout.trim() !== '3') throw new Error(`${c.isa}: the workload printed ${JSON.stringify(w.stdout)}, not 3`);
    log(`${c.isa}: uname -m says ${c.uname}, worker ${c.worker}, workload ${w.ms.toFixed(0)} ms`);
  }
  const load0 = loadavg();
  for (let i = 1; i <= RUNS; i++) {
    for (const c of cases) {
      const r = await run(c, ['sh', '-c', WORKLOAD]);
      c.e2e.push(r.ms);
      c.exec.push(r.execMs);
    }
    log(`run ${i}/${RUNS}: ${cases.map((c) => `${c.isa} ${c.e2e.at(-1).toFixed(0)} ms`).join(', ')}`);
  }
  const ref = cases[0];
  const refE2e = median(ref.e2e);
  const refExec = median(ref.exec);
  const rows = cases.map((c) => ({
    isa: c.isa,
    how: c.how === 'qemu' ? 'QEMU user mode' : c.how === 'personality' ? 'native, linux32' : 'native',
    busybox: `busybox-static:${c.deb}`,
    unameM: c.uname,
    medianMs: median(c.e2e),
    ratio: median(c.e2e) / refE2e,
    medianExecMs: median(c.exec),
    execRatio: median(c.exec) / refExec,
    samplesMs: c.e2e.map((x) => Math.round(x * 10) / 10),
  }));
  const result = {
    workload: `sh -c '${WORKLOAD}'`,
    runs: RUNS,
    host: { cpus: cpus().length, cpuModel: cpus()[0]?.model.trim(), node: process.version, loadAvg: load0.map((x) => Math.round(x * 100) / 100), loadAvgEnd: loadavg().map((x) => Math.round(x * 100) / 100) },
    reference: native,
    rows,
    skipped,
  };
  if (args.json) process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  else {
    const f = (v) => (v >= 100 ? v.toFixed(0) : v.toFixed(1));
    const lines = [
      `workload: ${result.workload}; median of ${RUNS} runs each, round-robin; ${result.host.cpus} × ${result.host.cpuModel}, load ${result.host.loadAvg.join(' ')}`,
      '',
      '| ISA | how | uname -m | action latency (median) | × native | executing (median) | × native |',
      '|---|---|---|---:|---:|---:|---:|',
      ...rows.map((r) => `| ${r.isa} | ${r.how} | ${r.unameM} | ${f(r.medianMs)} ms | ${r.ratio.toFixed(2)}× | ${f(r.medianExecMs)} ms | ${r.execRatio.toFixed(2)}× |`),
      ...skipped.map((s) => `| ${s.isa} | skipped: ${s.why} | | | | | |`),
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
  }
} finally {
  clients?.close();
  await daemon?.stop(5_000);
  rmSync(dataDir, { recursive: true, force: true });
  for (const r of roots) rmSync(r, { recursive: true, force: true });
}
