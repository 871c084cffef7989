#!/usr/bin/env node
// Benchmark of an action's REAPI socket (platform property remoteApisSocketPath; not a test):
// what opening, binding in and closing the socket adds to an action. The same no-op action in
// the host-tools sandbox (`sh -c 'test -S reapi.sock'` with a socket, `sh -c 'true'` without,
// both exit 0) runs alternately, each run a new action (do_not_cache), on a temporary daemon in
// this process with one worker slot. Reports the median Execute-to-result latency of each and
// their ratio, measured in the same run.
//
//   npm run build && node scripts/bench-socket.js [--runs 40] [--json]
import { chmodSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

const { values: args } = parseArgs({ options: { runs: { type: 'string', default: '40' }, json: { type: 'boolean', default: false } } });
const RUNS = Number(args.runs);
if (!Number.isInteger(RUNS) || RUNS < 1) {
  process.stderr.write('bench-socket: --runs takes a whole number from 1\n');
  process.exit(2);
}
const dist = new URL('../dist/', import.meta.url);
if (!existsSync(new URL('daemon/daemon.js', dist))) {
  process.stderr.write('bench-socket: dist/ is not built: run `npm run build` first\n');
  process.exit(2);
}
const { Daemon } = await import(new URL('daemon/daemon.js', dist).href);
const { scratchDaemonConfig } = await import(new URL('config/config.js', dist).href);
const { connect, call } = await import(new URL('client/reapi-client.js', dist).href);
const { Digest } = await import(new URL('digest/digest.js', dist).href);
const { re } = await import(new URL('proto.js', dist).href);
const { execute } = await import(new URL('bench/exec.js', dist).href);
const { median } = await import(new URL('bench/stats.js', dist).href);
const { silentLogger } = await import(new URL('util/logger.js', dist).href);
const { hostIsa } = await import(new URL('scheduler/platform.js', dist).href);

const dataDir = mkdtempSync(join(tmpdir(), 'reexec-bench-socket-'));
// As root the daemon runs actions as an unprivileged user, which must pass through to the data dir.
chmodSync(dataDir, 0o711);
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
