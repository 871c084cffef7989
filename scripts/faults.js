#!/usr/bin/env node
// Fault campaign (issue 19): what a reexec daemon, run as its own process, survives, with the
// figures that say so.
//
//   uploads      SIGKILL during concurrent uploads of 1 KiB–32 MiB (BatchUpdateBlobs and
//                ByteStream), then a restart on the same data dir: every acknowledged blob
//                must be there and intact; a blob not acknowledged may be there, but whole.
//   executions   SIGKILL while actions run and wait in the queue, then a restart: every
//                operation runs again under its name and completes, outputs right.
//   disk-full    (root: a small tmpfs) another process fills the file system to the last
//                byte: writes are refused with RESOURCE_EXHAUSTED (never INTERNAL), the daemon
//                evicts by itself and takes writes again; `reexec gc --data-dir` on the full
//                disk frees it.
//   connections  300 silent connections, 20 that send the HTTP/2 preface a byte a second, and
//                a churn of 2,000 connect-and-close: all closed, descriptors back to where
//                they were, a client in good standing served throughout.
//
//   npm run build && node scripts/faults.js [--rounds 3] [--only uploads,executions,...]
//                                           [--quick] [--json] [--report FILE]
//
// Exit code 0: every scenario held; 1: one did not (the reasons are printed); 2: could not run.
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { scratchDir } from './lib/dist.js';
import { BUSYBOX, hasBubblewrap, loadDist, makeBusyboxRoot, MiB, processFigures, REPO, startDaemon } from './lib/reliability.js';
import { traffic } from './lib/traffic.js';

const ALL = ['uploads', 'executions', 'disk-full', 'connections'];
const { values: args } = parseArgs({
  options: {
    rounds: { type: 'string', default: '3' },
    only: { type: 'string' },
    quick: { type: 'boolean', default: false },
    json: { type: 'boolean', default: false },
    report: { type: 'string' },
  },
});
const ROUNDS = args.quick ? 1 : Number(args.rounds);
const only = args.only ? args.only.split(',').map((s) => s.trim()) : ALL;
for (const o of only) if (!ALL.includes(o)) (process.stderr.write(`faults: no scenario "${o}" (${ALL.join(', ')})\n`), process.exit(2));
const log = (s) => process.stderr.write(`${s}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const dist = await loadDist();
const { connect, call, treeFromDirectory } = dist;
const tmp = scratchDir('reexec-faults-');
const report = { passed: true, scenarios: {} };
const problems = [];
const check = (ok, what) => {
  if (!ok) problems.push(what);
  return ok;
};

/** Poll until `cond` is truthy (or throw after `ms`). */
async function until(what, cond, ms = 120_000, every = 100) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(every);
  }
}

// ── uploads ──────────────────────────────────────────────────────────────────────────────
async function uploads() {
  const dataDir = join(tmp, 'uploads');
  const figures = { rounds: ROUNDS, acknowledged: 0, intact: 0, lost: 0, notAcknowledgedButStored: 0, partial: 0, bytesAcknowledged: 0 };
  for (let round = 0; round < ROUNDS; round++) {
    const d = await startDaemon({ dataDir, configYaml: 'execution: {enabled: false}\n' });
    const clients = connect(d.address);
    const t = traffic(clients, dist);
    const acked = [];
    const tried = [];
    let killed = false;
    // Sizes from 1 KiB to 32 MiB, log-uniform: most small, some large (ByteStream above 1 MiB).
    const size = () => Math.round(1024 * 2 ** (Math.random() * 15));
    const uploader = async () => {
      while (!killed) {
        const data = randomBytes(size());
        const digest = t.digestOf(data);
        tried.push({ digest, data: data.length <= 4 * MiB ? data : undefined });
        try {
          if (data.length > MiB) await t.bsWrite(data, digest);
          else await t.putSmall(data);
          acked.push({ digest, data });
        } catch {
          /* cut by the kill */
        }
      }
    };
    const workers = Array.from({ length: 16 }, uploader);
    // Kill once some uploads are acknowledged and others are in flight.
    await until('acknowledged uploads', () => acked.length >= 40 + Math.floor(Math.random() * 60));
    await d.kill();
    killed = true;
    clients.close();
    await Promise.all(workers);

    const again = await startDaemon({ dataDir, configYaml: 'execution: {enabled: false}\n' });
    const c2 = connect(again.address);
    const t2 = traffic(c2, dist);
    for (const a of acked) {
      const back = await t2.bsRead(a.digest).catch(() => undefined);
      if (!back) figures.lost++;
      else if (back.equals(a.data)) figures.intact++;
      else figures.partial++;
      figures.bytesAcknowledged += a.data.length;
    }
    figures.acknowledged += acked.length;
    const ackedKeys = new Set(acked.map((a) => a.digest.hash));
    for (const x of tried.filter((x) => !ackedKeys.has(x.digest.hash))) {
      const missing = (await call(c2.cas, 'FindMissingBlobs', { blobDigests: [x.digest] })).missingBlobDigests.length > 0;
      if (missing) continue;
      figures.notAcknowledgedButStored++;
      const back = await t2.bsRead(x.digest).catch(() => undefined);
      if (!back || t2.digestOf(back).hash !== x.digest.hash) figures.partial++;
    }
    c2.close();
    await again.stop();
    log(`  uploads, round ${round + 1}: killed with ${acked.length} acknowledged and ${tried.length - acked.length} in flight`);
  }
  check(figures.lost === 0, `uploads: ${figures.lost} acknowledged blob(s) lost`);
  check(figures.partial === 0, `uploads: ${figures.partial} partial or corrupt blob(s) visible`);
  check(figures.intact === figures.acknowledged, 'uploads: not every acknowledged blob read back intact');
  return figures;
}

// ── executions ───────────────────────────────────────────────────────────────────────────
async function executions() {
  if (!BUSYBOX || !hasBubblewrap()) throw new Error(`needs ${!BUSYBOX ? 'busybox-static' : 'bubblewrap'}`);
  const dataDir = join(tmp, 'executions');
  const root = makeBusyboxRoot();
  const figures = { rounds: ROUNDS, submitted: 0, completedAfterRestart: 0, rightOutputs: 0, lost: 0 };
  const pools = '';
  for (let round = 0; round < ROUNDS; round++) {
    const d = await startDaemon({ dataDir, configYaml: pools });
    const clients = connect(d.address);
    const t = traffic(clients, dist);
    const tree = await treeFromDirectory(root);
    await t.uploadTree(tree);
    const n = args.quick ? 4 : 8;
    const names = [];
    const tags = Array.from({ length: n }, () => randomBytes(6).toString('hex'));
    for (const tag of tags) {
      const action = await t.actionFor(tree.root.toProto(), ['sh', '-c', `sleep 2; echo ${tag} > out.txt`]);
      t.execute(action, (name) => names.push({ name, tag })).catch(() => undefined);
    }
    await until('every operation to be named', () => names.length === n);
    // Some run (a slot per core), the rest wait: kill now.
    await d.kill();
    clients.close();
    figures.submitted += n;

    const again = await startDaemon({ dataDir, configYaml: pools });
    const c2 = connect(again.address);
    const t2 = traffic(c2, dist);
    await Promise.all(
      names.map(async ({ name, tag }) => {
        const r = await t2.waitExecution(name).catch(() => undefined);
        if (!r || r.status?.code || r.result?.exitCode !== 0) {
          figures.lost++;
          return;
        }
        figures.completedAfterRestart++;
        if ((await t2.outputFile(r, 'out.txt'))?.toString() === `${tag}\n`) figures.rightOutputs++;
      }),
    );
    c2.close();
    await again.stop();
    log(`  executions, round ${round + 1}: killed with ${n} operations running or queued`);
  }
  rmSync(root, { recursive: true, force: true });
  check(figures.lost === 0, `executions: ${figures.lost} operation(s) never completed after the restart`);
  check(figures.rightOutputs === figures.submitted, `executions: ${figures.submitted - figures.rightOutputs} wrong or missing output(s)`);
  return figures;
}

// ── disk full ────────────────────────────────────────────────────────────────────────────
async function diskFull() {
  if (process.getuid?.() !== 0) throw new Error('needs root (mounts a small tmpfs)');
  const mnt = mkdtempSync(join(tmpdir(), 'reexec-faults-fs-'));
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64m', 'tmpfs', mnt]);
  const figures = { fileSystemBytes: 64 * MiB, writesWhileFull: 0, refusedResourceExhausted: 0, refusedOther: 0, selfRecovered: false, recoverySeconds: NaN, offlineGcOnFullDisk: false, daemonAlive: false };
  const fill = () =>
    new Promise((resolve) => {
      execFileSync('mkdir', ['-p', join(mnt, 'other')]);
      const p = spawn('sh', ['-c', `dd if=/dev/urandom of=${join(mnt, 'other', `f${Date.now()}`)} bs=1M 2>/dev/null; dd if=/dev/urandom of=${join(mnt, 'other', `g${Date.now()}`)} bs=4k 2>/dev/null; true`]);
      p.once('exit', resolve);
    });
  const free = () => {
    const s = statfsSync(mnt);
    return s.bavail * s.bsize;
  };
  try {
    const dataDir = join(mnt, 'data');
    const config = 'storage: {fsync: false, max-bytes: 48MiB, min-free-disk: 1MiB, grace-period: 2s}\nexecution: {enabled: false}\n';
    const d = await startDaemon({ dataDir, configYaml: config });
    const clients = connect(d.address);
    const t = traffic(clients, dist);
    const put = async (n, size) => {
      const codes = [];
      for (let i = 0; i < n; i++) {
        const data = randomBytes(size);
        const res = await call(clients.cas, 'BatchUpdateBlobs', { requests: [{ digest: t.digestOf(data), data }] });
        codes.push(res.responses[0].status?.code ?? 0);
      }
      return codes;
    };
    await put(40, 256 * 1024);
    await put(150, 16 * 1024);
    await sleep(2500); // past the 2 s grace period: evictable
    await fill();
    check(free() < 64 * 1024, `disk-full: the file system did not fill (${free()} bytes free)`);
    const full = Date.now();
    const codes = await put(30, 16 * 1024);
    figures.writesWhileFull = codes.length;
    figures.refusedResourceExhausted = codes.filter((c) => c === 8).length;
    figures.refusedOther = codes.filter((c) => c !== 0 && c !== 8).length;
    await until('writes to be taken again', async () => (await put(2, 64 * 1024)).every((c) => c === 0), 120_000, 500);
    figures.selfRecovered = true;
    figures.recoverySeconds = Math.round((Date.now() - full) / 100) / 10;
    figures.daemonAlive = d.running();
    check(!/unhandled rejection|Commit failed/.test(d.output()), 'disk-full: the daemon logged an unhandled rejection or a failed commit');
    clients.close();
    await d.stop();
    await fill();
    const gc = spawn(process.execPath, [join(REPO, 'bin', 'run.js'), 'gc', '--config', d.config, '--data-dir', dataDir, '--target', '0', '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    gc.stdout.on('data', (b) => (out += b));
    const code = await new Promise((r) => gc.once('exit', r));
    figures.offlineGcOnFullDisk = code === 0 && JSON.parse(out).freedBlobs > 0;
  } finally {
    try {
      execFileSync('umount', [mnt]);
    } catch {
      execFileSync('umount', ['-l', mnt]);
    }
    rmSync(mnt, { recursive: true, force: true });
  }
  check(figures.refusedOther === 0, `disk-full: ${figures.refusedOther} write(s) refused with something other than RESOURCE_EXHAUSTED`);
  check(figures.selfRecovered && figures.daemonAlive, 'disk-full: the daemon did not serve writes again by itself');
  check(figures.offlineGcOnFullDisk, 'disk-full: `reexec gc --data-dir` failed on the full disk');
  return figures;
}

// ── connections ──────────────────────────────────────────────────────────────────────────
async function connections() {
  const d = await startDaemon({ dataDir: join(tmp, 'connections'), configYaml: 'limits: {handshake-timeout: 2s, max-connections-per-client: 2000, max-connections: 3000}\nexecution: {enabled: false}\n' });
  const clients = connect(d.address);
  const t = traffic(clients, dist);
  const probe = t.digestOf(randomBytes(10));
  const figures = { silent: 300, dribbling: 20, churn: args.quick ? 500 : 2000, closedByServer: 0, fdsBefore: 0, fdsPeak: 0, fdsAfter: 0, goodClientServed: true };
  try {
    await call(clients.cas, 'FindMissingBlobs', { blobDigests: [probe] });
    figures.fdsBefore = processFigures(d.pid).fds;
    const sockets = [];
    const open = (n) =>
      Promise.all(
        Array.from(
          { length: n },
          () =>
            new Promise((resolve) => {
              const s = net.connect(d.port, '127.0.0.1');
              const c = { s, closed: false };
              s.resume();
              s.on('error', () => undefined);
              s.once('close', () => (c.closed = true));
              s.once('connect', () => resolve(c));
              sockets.push(s);
            }),
        ),
      );
    const silent = await open(figures.silent);
    const dribbling = await open(figures.dribbling);
    const preface = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
    let sent = 0;
    const drip = setInterval(() => {
      for (const c of dribbling) if (!c.closed && sent < preface.length) c.s.write(preface.subarray(sent, sent + 1));
      sent++;
    }, 1000);
    // Churn: connect and close at once, over and over, while a client keeps calling.
    for (let i = 0; i < figures.churn; i += 50) {
      const batch = await open(50);
      for (const c of batch) c.s.destroy();
      if (i % 500 === 0) {
        figures.fdsPeak = Math.max(figures.fdsPeak, processFigures(d.pid).fds);
        await call(clients.cas, 'FindMissingBlobs', { blobDigests: [probe] }).catch(() => (figures.goodClientServed = false));
      }
    }
    await until('the server to close the silent and dribbling connections', () => [...silent, ...dribbling].every((c) => c.closed));
    clearInterval(drip);
    figures.closedByServer = [...silent, ...dribbling].filter((c) => c.closed).length;
    await until("the daemon's descriptors to go back down", () => processFigures(d.pid).fds <= figures.fdsBefore + 2);
    figures.fdsAfter = processFigures(d.pid).fds;
    await call(clients.cas, 'FindMissingBlobs', { blobDigests: [probe] }).catch(() => (figures.goodClientServed = false));
    for (const s of sockets) s.destroy();
  } finally {
    clients.close();
    await d.stop();
  }
  check(figures.closedByServer === figures.silent + figures.dribbling, 'connections: not every silent or dribbling connection was closed');
  check(figures.goodClientServed, 'connections: the client in good standing was not served throughout');
  return figures;
}

const scenarios = { uploads, executions, 'disk-full': diskFull, connections };
let couldNotRun = false;
for (const name of only) {
  log(`faults: ${name}…`);
  const started = Date.now();
  try {
    report.scenarios[name] = { ...(await scenarios[name]()), seconds: Math.round((Date.now() - started) / 1000) };
  } catch (err) {
    report.scenarios[name] = { error: String(err.message ?? err) };
    problems.push(`${name}: ${err.message ?? err}`);
    if (/^needs /.test(err.message)) couldNotRun = true;
  }
  log(`  ${JSON.stringify(report.scenarios[name])}`);
}
rmSync(tmp, { recursive: true, force: true });
report.passed = problems.length === 0;
report.problems = problems;
log(`faults ${report.passed ? 'PASSED' : 'FAILED'}`);
for (const p of problems) log(`  ✗ ${p}`);
if (args.report) writeFileSync(args.report, JSON.stringify(report, null, 2) + '\n');
if (args.json) process.stdout.write(JSON.stringify(report, null, 2) + '\n');
process.exit(report.passed ? 0 : couldNotRun ? 2 : 1);
