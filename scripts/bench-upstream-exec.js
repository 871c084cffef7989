#!/usr/bin/env node
// Benchmark of execution forwarding (not a test): no-op actions run by reexec's own local
// slots against the same no-ops sent to a workstation reexec that forwards every action to that
// daemon (upstream.execute: upstream), in the same run, both daemons in this process on
// loopback. The no-op is a tiny static ELF that exits 0, the whole input root; each run is a new
// action (do_not_cache), so each forwarded one checks its inputs upstream (FindMissingBlobs),
// Executes there and fetches its logs back. Reports latency (median, one at a time) and
// throughput (actions/s, 4 at once), and their ratios to the local run.
//
//   npm run build && node scripts/bench-upstream-exec.js [--runs 30] [--json]
import { rmSync } from 'node:fs';
import { loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { fromDist, scratchDir } from './lib/dist.js';

const { values: args } = parseArgs({ options: { runs: { type: 'string', default: '30' }, json: { type: 'boolean', default: false } } });
const RUNS = Number(args.runs);
if (!Number.isInteger(RUNS) || RUNS < 1) {
  process.stderr.write('bench-upstream-exec: --runs takes a whole number from 1\n');
  process.exit(2);
}
const { Daemon, scratchDaemonConfig, DEFAULT_UPSTREAM, connect, call, Digest, re, execute, median, runConcurrent, exitZeroElf, silentLogger, hostIsa } = await fromDist(
  'bench-upstream-exec',
  'daemon/daemon.js',
  'config/config.js',
  'client/reapi-client.js',
  'digest/digest.js',
  'proto.js',
  'bench/exec.js',
  'bench/stats.js',
  'bench/tiny-elf.js',
  'util/logger.js',
  'scheduler/platform.js',
);

const dirs = [scratchDir('reexec-bench-upstream-'), scratchDir('reexec-bench-workstation-')];
const pools = [{ name: 'native', isa: [hostIsa()], slots: 2 }];
const upConfig = scratchDaemonConfig(dirs[0]);
upConfig.execution.pools = pools;
const upstream = await Daemon.start(upConfig, silentLogger);
const wsConfig = scratchDaemonConfig(dirs[1]);
wsConfig.execution.pools = pools;
wsConfig.upstream = { ...DEFAULT_UPSTREAM, url: `grpc://${upstream.addresses[0]}`, execute: 'upstream', push: false };
const workstation = await Daemon.start(wsConfig, silentLogger);
const targets = { local: connect(upstream.addresses[0]), forwarded: connect(workstation.addresses[0]) };
try {
  const elf = exitZeroElf();
  if (!elf) throw new Error(`no tiny no-op program for ${process.arch}`);
  const put = async (clients, bytes) => {
    const digest = Digest.compute(bytes);
    await call(clients.cas, 'BatchUpdateBlobs', { requests: [{ digest: digest.toProto(), data: bytes }] });
    return digest;
  };
  let n = 0;
  const action = async (clients) => {
    const elfDigest = await put(clients, elf);
    const root = await put(clients, re.Directory.encode({ files: [{ name: 'true', digest: elfDigest.toProto(), isExecutable: true }] }).finish());
    const command = await put(clients, re.Command.encode({ arguments: ['/true', `run ${n++}`] }).finish());
    const properties = [{ name: 'ISA', value: hostIsa() }, { name: 'OSFamily', value: 'linux' }];
    return put(clients, re.Action.encode({ commandDigest: command.toProto(), inputRootDigest: root.toProto(), platform: { properties }, doNotCache: true }).finish());
  };
  const one = async (clients) => {
    const digest = await action(clients);
    const started = process.hrtime.bigint();
    const response = await execute(clients, '', digest);
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    if ((response.status?.code ?? 0) !== 0 || response.result?.exitCode !== 0) throw new Error(`the no-op failed: ${response.status?.message ?? `exit ${response.result?.exitCode}`}`);
    return ms;
  };
  const measure = async (clients) => {
    for (let i = 0; i < 3; i++) await one(clients);
    const latencies = [];
    for (let i = 0; i < RUNS; i++) latencies.push(await one(clients));
    const t = await runConcurrent(RUNS, 4, async () => void (await one(clients)));
    return { latencyMs: median(latencies), perSecond: RUNS / t.seconds };
  };
  const load = loadavg()[0];
  const local = await measure(targets.local);
  const forwarded = await measure(targets.forwarded);
  const ranUpstream = upstream.execution.scheduler.list().length;
  const out = {
    runs: RUNS,
    loadAverage: [load, loadavg()[0]].map((x) => Number(x.toFixed(1))),
    local,
    forwarded,
    latencyRatio: forwarded.latencyMs / local.latencyMs,
    throughputRatio: forwarded.perSecond / local.perSecond,
    upstreamOperations: ranUpstream,
  };
  if (args.json) process.stdout.write(`${JSON.stringify(out)}\n`);
  else {
    const row = (what, m, base) => `  ${what.padEnd(30)} ${m.latencyMs.toFixed(1).padStart(7)} ms${base ? ` (${(m.latencyMs / base.latencyMs).toFixed(2)}×)` : '        '}   ${m.perSecond.toFixed(1).padStart(6)}/s${base ? ` (${(m.perSecond / base.perSecond).toFixed(2)}×)` : ''}\n`;
    process.stdout.write(
      `no-op action (tiny static ELF), latency median of ${RUNS} one at a time, throughput of ${RUNS} at 4 at once (load ${out.loadAverage.join(' → ')}):\n` +
        row('local slots (2)', local) +
        row('forwarded to an upstream reexec', forwarded, local),
    );
  }
} finally {
  targets.local.close();
  targets.forwarded.close();
  await workstation.stop();
  await upstream.stop();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
}
