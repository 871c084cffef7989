#!/usr/bin/env node
// Benchmark of an action's REAPI socket (platform property remoteApisSocketPath; not a test):
// what opening, binding in and closing the socket adds to an action. The same no-op action in
// the host-tools sandbox (`sh -c 'test -S reapi.sock'` with a socket, `sh -c 'true'` without,
// both exit 0) runs alternately, each run a new action (do_not_cache), on a temporary daemon in
// this process with one worker slot. Reports the median Execute-to-result latency of each and
// their ratio, measured in the same run.
//
//   npm run build && node scripts/bench-socket.js [--runs 40] [--json]
import { rmSync } from 'node:fs';
import { loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { fromDist, scratchDir } from './lib/dist.js';

const { values: args } = parseArgs({ options: { runs: { type: 'string', default: '40' }, json: { type: 'boolean', default: false } } });
const RUNS = Number(args.runs);
if (!Number.isInteger(RUNS) || RUNS < 1) {
  process.stderr.write('bench-socket: --runs takes a whole number from 1\n');
  process.exit(2);
}
const { Daemon, scratchDaemonConfig, connect, call, Digest, re, execute, median, silentLogger, hostIsa } = await fromDist(
  'bench-socket',
  'daemon/daemon.js',
  'config/config.js',
  'client/reapi-client.js',
  'digest/digest.js',
  'proto.js',
  'bench/exec.js',
  'bench/stats.js',
  'util/logger.js',
  'scheduler/platform.js',
);

const dataDir = scratchDir('reexec-bench-socket-');
const config = scratchDaemonConfig(dataDir);
config.execution.pools = [{ name: 'native', isa: [hostIsa()], slots: 1 }];
const daemon = await Daemon.start(config, silentLogger);
const clients = connect(daemon.addresses[0]);
try {
  const put = async (bytes) => {
    const digest = Digest.compute(bytes);
    await call(clients.cas, 'BatchUpdateBlobs', { requests: [{ digest: digest.toProto(), data: bytes }] });
    return digest;
  };
  const root = await put(re.Directory.encode({}).finish());
  let n = 0;
  const action = async (socket) => {
    const command = await put(
      re.Command.encode({ arguments: ['/bin/sh', '-c', socket ? 'test -S reapi.sock' : 'true', `run ${n++}`], environmentVariables: [{ name: 'PATH', value: '/usr/bin:/bin' }] }).finish(),
    );
    const properties = [{ name: 'OSFamily', value: 'linux' }, ...(socket ? [{ name: 'remoteApisSocketPath', value: 'reapi.sock' }] : []), { name: 'reexec-sandbox', value: 'host-tools' }];
    return put(re.Action.encode({ commandDigest: command.toProto(), inputRootDigest: root.toProto(), platform: { properties }, doNotCache: true }).finish());
  };
  const run = async (socket) => {
    const digest = await action(socket);
    const started = process.hrtime.bigint();
    const response = await execute(clients, '', digest);
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    if ((response.status?.code ?? 0) !== 0 || response.result?.exitCode !== 0) throw new Error(`the ${socket ? 'socket' : 'plain'} action failed: ${response.status?.message ?? `exit ${response.result?.exitCode}`}`);
    return ms;
  };
  for (let i = 0; i < 3; i++) {
    await run(false);
    await run(true);
  }
  const load = loadavg()[0];
  const plain = [];
  const socket = [];
  for (let i = 0; i < RUNS; i++) {
    plain.push(await run(false));
    socket.push(await run(true));
  }
  const out = { runs: RUNS, loadAverage: [load, loadavg()[0]].map((x) => Number(x.toFixed(1))), plainMedianMs: median(plain), socketMedianMs: median(socket), ratio: median(socket) / median(plain) };
  if (args.json) process.stdout.write(`${JSON.stringify(out)}\n`);
  else {
    process.stdout.write(
      `no-op host-tools action, median of ${RUNS} each, alternating (load ${out.loadAverage.join(' → ')}):\n` +
        `  without a REAPI socket  ${out.plainMedianMs.toFixed(1)} ms\n` +
        `  with one                ${out.socketMedianMs.toFixed(1)} ms   (${out.ratio.toFixed(2)}×)\n`,
    );
  }
} finally {
  clients.close();
  await daemon.stop();
  rmSync(dataDir, { recursive: true, force: true });
}
