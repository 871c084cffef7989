#!/usr/bin/env node
// Benchmark of bots (Remote Workers API; not a test): no-op actions through one and two local
// buildbox-workers (each behind its own buildbox-casd) against reexec's own local slots, in the
// same run, on a temporary daemon in this process. The no-op is a tiny static ELF that exits 0,
// the whole input root; each run is a new action (do_not_cache). Local slots run first (two
// slots, no bot connected); then the actions ask for a property only the bots offer
// (reexec-bench=bot), so nothing else takes them. Reports latency (median, one at a time) and
// throughput (actions/s, 4 at once), and their ratios to the local slots.
//
//   npm run build && node scripts/bench-bots.js [--runs 30] [--json] [--clients-root ROOT]
//
// buildbox-casd, buildbox-worker and buildbox-run-bubblewrap come from PATH, or with
// --clients-root from the test clients root (test/e2e/harness/clients-root.sh).
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fromDist, scratchDir } from './lib/dist.js';

const { values: args } = parseArgs({ options: { runs: { type: 'string', default: '30' }, json: { type: 'boolean', default: false }, 'clients-root': { type: 'string' } } });
const RUNS = Number(args.runs);
if (!Number.isInteger(RUNS) || RUNS < 1) {
  process.stderr.write('bench-bots: --runs takes a whole number from 1\n');
  process.exit(2);
}
const { Daemon, scratchDaemonConfig, connect, call, Digest, re, execute, median, runConcurrent, exitZeroElf, silentLogger, hostIsa } = await fromDist(
  'bench-bots',
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

const clientsRoot = args['clients-root'];
const harness = new URL('../test/e2e/harness/clients-root.sh', import.meta.url).pathname;
// Bot files live where the bot's programs see them: under the clients root's /tmp with --clients-root.
const work = clientsRoot ? mkdtempSync(join(clientsRoot, 'tmp', 'reexec-bench-bots-')) : mkdtempSync(join(tmpdir(), 'reexec-bench-bots-'));
const seen = (p) => (clientsRoot ? p.slice(clientsRoot.length) : p);
const spawnTool = (argv) =>
  clientsRoot ? spawn('sh', [harness, 'run', clientsRoot, ...argv], { detached: true, stdio: 'ignore' }) : spawn(argv[0], argv.slice(1), { detached: true, stdio: 'ignore' });

const dataDir = scratchDir('reexec-bench-bots-data-');
const config = scratchDaemonConfig(dataDir);
config.listen = ['127.0.0.1:0'];
config.execution.pools = [{ name: 'native', isa: [hostIsa()], slots: 2 }];
const daemon = await Daemon.start(config, silentLogger);
const url = `http://${daemon.addresses[0]}`;
const clients = connect(daemon.addresses[0]);
const procs = [];
const startBot = async (id) => {
  const dir = join(work, id);
  mkdirSync(dir);
  const casd = spawnTool(['buildbox-casd', `--cas-remote=${url}`, `--bind=unix:${seen(dir)}/casd.sock`, `${seen(dir)}/cache`]);
  procs.push(casd);
  for (let i = 0; !readdirSync(dir).includes('casd.sock'); i++) {
    if (casd.exitCode !== null || i > 600) throw new Error(`buildbox-casd of ${id} did not start`);
    await new Promise((r) => setTimeout(r, 100));
  }
  procs.push(
    spawnTool([
      'buildbox-worker',
      `--bots-remote=${url}`,
      `--cas-remote=unix:${seen(dir)}/casd.sock`,
      '--buildbox-run=buildbox-run-bubblewrap',
      '--runner-arg=--disable-localcas',
      '--platform=OSFamily=linux',
      `--platform=ISA=${hostIsa()}`,
      '--platform=reexec-bench=bot',
      id,
    ]),
  );
  for (let i = 0; !daemon.execution.bots.list().some((b) => b.botId === id); i++) {
    if (i > 600) throw new Error(`bot ${id} did not connect`);
    await new Promise((r) => setTimeout(r, 100));
  }
};
try {
  const put = async (bytes) => {
    const digest = Digest.compute(bytes);
    await call(clients.cas, 'BatchUpdateBlobs', { requests: [{ digest: digest.toProto(), data: bytes }] });
    return digest;
  };
  const elf = exitZeroElf();
  if (!elf) throw new Error(`no tiny no-op program for ${process.arch}`);
  const elfDigest = await put(elf);
  const root = await put(re.Directory.encode({ files: [{ name: 'true', digest: elfDigest.toProto(), isExecutable: true }] }).finish());
  let n = 0;
  const action = async (bots) => {
    const command = await put(re.Command.encode({ arguments: ['/true', `run ${n++}`] }).finish());
    const properties = [{ name: 'ISA', value: hostIsa() }, { name: 'OSFamily', value: 'linux' }, ...(bots ? [{ name: 'reexec-bench', value: 'bot' }] : [])];
    return put(re.Action.encode({ commandDigest: command.toProto(), inputRootDigest: root.toProto(), platform: { properties }, doNotCache: true }).finish());
  };
  const one = async (bots) => {
    const digest = await action(bots);
    const started = process.hrtime.bigint();
    const response = await execute(clients, '', digest);
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    if ((response.status?.code ?? 0) !== 0 || response.result?.exitCode !== 0) throw new Error(`the no-op failed: ${response.status?.message ?? `exit ${response.result?.exitCode}`}`);
    return ms;
  };
  const measure = async (bots) => {
    for (let i = 0; i < 3; i++) await one(bots);
    const latencies = [];
    for (let i = 0; i < RUNS; i++) latencies.push(await one(bots));
    const t = await runConcurrent(RUNS, 4, async () => void (await one(bots)));
    return { latencyMs: median(latencies), perSecond: RUNS / t.seconds };
  };
  const load = loadavg()[0];
  const local = await measure(false);
  await startBot('bench-bot-1');
  const oneBot = await measure(true);
  await startBot('bench-bot-2');
  const twoBots = await measure(true);
  const out = {
    runs: RUNS,
    loadAverage: [load, loadavg()[0]].map((x) => Number(x.toFixed(1))),
    local,
    oneBot,
    twoBots,
    latencyRatio: { oneBot: oneBot.latencyMs / local.latencyMs, twoBots: twoBots.latencyMs / local.latencyMs },
    throughputRatio: { oneBot: oneBot.perSecond / local.perSecond, twoBots: twoBots.perSecond / local.perSecond },
  };
  if (args.json) process.stdout.write(`${JSON.stringify(out)}\n`);
  else {
    const row = (what, m, base) => `  ${what.padEnd(22)} ${m.latencyMs.toFixed(1).padStart(7)} ms${base ? ` (${(m.latencyMs / base.latencyMs).toFixed(2)}×)` : '        '}   ${m.perSecond.toFixed(1).padStart(6)}/s${base ? ` (${(m.perSecond / base.perSecond).toFixed(2)}×)` : ''}\n`;
    process.stdout.write(
      `no-op action (tiny static ELF), latency median of ${RUNS} one at a time, throughput of ${RUNS} at 4 at once (load ${out.loadAverage.join(' → ')}):\n` +
        row('2 local slots', local) +
        row('1 buildbox-worker', oneBot, local) +
        row('2 buildbox-workers', twoBots, local),
    );
  }
} finally {
  for (const p of procs) {
    try {
      process.kill(-p.pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  clients.close();
  await daemon.stop();
  rmSync(work, { recursive: true, force: true });
  rmSync(dataDir, { recursive: true, force: true });
}
