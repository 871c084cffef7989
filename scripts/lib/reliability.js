// Shared parts of the fault and soak scripts (scripts/faults.js, scripts/soak.js): a reexec
// daemon as its own process (so that it can be killed with SIGKILL and its memory and file
// descriptors measured alone), process figures from /proc, a busybox input root, and the
// statistics the verdicts use. Plain JavaScript on the build in dist/: run `npm run build` first.
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DIST } from './dist.js';

export const REPO = fileURLToPath(new URL('../../', import.meta.url));
const BIN = join(REPO, 'bin', 'run.js');

/** The modules of the build the scripts use (dist/). */
export async function loadDist() {
  if (!existsSync(new URL('daemon/daemon.js', DIST))) throw new Error('dist/ is not built: run `npm run build` first');
  const mod = async (p) => import(new URL(p, DIST).href);
  return {
    ...(await mod('client/reapi-client.js')),
    ...(await mod('client/merkle.js')),
    ...(await mod('digest/digest.js')),
    ...(await mod('proto.js')),
  };
}

/**
 * `reexec start` as its own process with `configYaml` (data dir and listen address are added),
 * resolved once it logs the address it serves on.
 */
export async function startDaemon({ dataDir, port = 0, configYaml = '', env = {}, timeoutMs = 60_000 }) {
  mkdirSync(dataDir, { recursive: true });
  const config = join(dataDir, '..', `${dataDir.split('/').pop()}.config.yaml`);
  writeFileSync(config, `listen: 127.0.0.1:${port}\ndata-dir: ${dataDir}\nmetrics: {listen: off}\n${configYaml}`);
  const child = spawn(process.execPath, [BIN, 'start', '--config', config, '--log-format', 'json'], { cwd: REPO, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const address = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`reexec did not start within ${timeoutMs} ms:\n${out}`)), timeoutMs);
    const onData = (b) => {
      out += b.toString();
      const m = /"addresses":\["([^"]+)"/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`reexec exited (code ${code}, signal ${signal}) before serving:\n${out}`));
    });
  });
  const running = () => child.exitCode === null && child.signalCode === null;
  return {
    pid: child.pid,
    address,
    port: Number(address.split(':').pop()),
    dataDir,
    config,
    output: () => out,
    running,
    exited,
    /** SIGKILL: a crash. */
    async kill() {
      if (running()) child.kill('SIGKILL');
      return exited;
    },
    /** SIGTERM and wait (SIGKILL after 30 s). */
    async stop() {
      if (running()) child.kill('SIGTERM');
      const t = setTimeout(() => running() && child.kill('SIGKILL'), 30_000);
      const r = await exited;
      clearTimeout(t);
      return r;
    },
  };
}

/** Anonymous memory (RssAnon: heap and buffers, not the file-backed LMDB map), resident set and open descriptors of a process. */
export function processFigures(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (name) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) * 1024;
  return { rssAnonBytes: kib('RssAnon'), rssBytes: kib('VmRSS'), fds: readdirSync(`/proc/${pid}/fd`).length };
}

/** Debian busybox-static, if installed. */
export const BUSYBOX = ['/bin/busybox', '/usr/bin/busybox'].find((p) => existsSync(p));

/** bwrap on PATH, if installed. */
export function hasBubblewrap() {
  try {
    execFileSync('bwrap', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** A tiny input root: busybox, its applets as symlinks in usr/bin, bin → usr/bin, empty dev, proc, tmp. */
export function makeBusyboxRoot() {
  if (!BUSYBOX) throw new Error('busybox-static is not installed: apt-get install busybox-static');
  const root = mkdtempSync(join(tmpdir(), 'reexec-reliability-root-'));
  mkdirSync(join(root, 'usr', 'bin'), { recursive: true });
  copyFileSync(BUSYBOX, join(root, 'usr', 'bin', 'busybox'));
  chmodSync(join(root, 'usr', 'bin', 'busybox'), 0o755);
  for (const a of ['sh', 'echo', 'cat', 'sleep', 'sha256sum', 'head', 'wc', 'dd', 'mkdir']) execFileSync('ln', ['-s', 'busybox', join(root, 'usr', 'bin', a)]);
  execFileSync('ln', ['-s', 'usr/bin', join(root, 'bin')]);
  for (const d of ['dev', 'proc', 'tmp']) mkdirSync(join(root, d));
  return root;
}

/** Random bytes (incompressible, distinct). */
export const blob = (n) => randomBytes(n);

/** The q-quantile (0..1) of numbers, nearest rank; NaN when empty. */
export function quantile(xs, q) {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))];
}

/** Least-squares slope of y over x (per unit of x); 0 with fewer than two points. */
export function slope(points) {
  const n = points.length;
  if (n < 2) return 0;
  const mx = points.reduce((a, p) => a + p.x, 0) / n;
  const my = points.reduce((a, p) => a + p.y, 0) / n;
  let num = 0;
  let den = 0;
  for (const p of points) {
    num += (p.x - mx) * (p.y - my);
    den += (p.x - mx) ** 2;
  }
  return den === 0 ? 0 : num / den;
}

const mean = (xs) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);

/**
 * Whether a series sampled over time grows without bound. Samples of the first `warmupShare`
 * are left out (start-up, JIT, caches filling); the rest is split into halves. It grows when
 * both hold: the second half's mean is above the first's by more than `absolute` and by more
 * than `relative` of it, and the least-squares slope over the second half, projected over an
 * hour, exceeds `perHour`. A plateau (growth that stopped) and noise pass; one high sample
 * cannot fail it.
 */
export function growthVerdict(samples, { absolute, relative, perHour, warmupShare = 0.2 }) {
  const start = Math.floor(samples.length * warmupShare);
  const rest = samples.slice(start);
  if (rest.length < 4) return { growing: false, reason: `too few samples (${rest.length}) to judge`, firstHalfMean: NaN, secondHalfMean: NaN, slopePerHour: 0 };
  const half = Math.floor(rest.length / 2);
  const first = rest.slice(0, half);
  const second = rest.slice(half);
  const m1 = mean(first.map((s) => s.y));
  const m2 = mean(second.map((s) => s.y));
  const perMs = slope(second);
  const slopePerHour = perMs * 3_600_000;
  const rise = m2 - m1;
  const growing = rise > absolute && rise > relative * m1 && slopePerHour > perHour;
  return { growing, firstHalfMean: m1, secondHalfMean: m2, slopePerHour, reason: growing ? 'the second half is higher and still rising' : 'flat' };
}

/** Parse "90s", "15m", "1h" (or plain seconds) to milliseconds. */
export function durationMs(text) {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(String(text));
  if (!m) throw new Error(`not a duration: ${text} (examples: 90s, 15m, 1h)`);
  return Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] ?? 's'];
}

export const MiB = 1024 * 1024;
export const fmtMiB = (b) => `${(b / MiB).toFixed(1)} MiB`;
