// What the peer benchmarks share: free ports, a reexec daemon as a separate process (as users
// run it), buildbox-casd in server mode from the test clients root, and commands run inside
// that root (test/e2e/harness/clients-root.sh `run`: a private mount namespace, the host's
// network, so 127.0.0.1 inside is the host's loopback).
import { spawn } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, symlinkSync } from 'node:fs';
import { connect as netConnect, createServer } from 'node:net';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const CLIENTS_ROOT_SCRIPT = join(REPO_ROOT, 'test', 'e2e', 'harness', 'clients-root.sh');

/** Where the test clients root is (the same rule as test/helpers/clients-root.ts). */
export function clientsRootPath() {
  if (process.env.REEXEC_CLIENTS_ROOT) return process.env.REEXEC_CLIENTS_ROOT;
  if (process.env.XDG_CACHE_HOME) return join(process.env.XDG_CACHE_HOME, 'reexec-test', 'clients-root');
  return process.getuid?.() === 0 ? '/var/cache/reexec-test/clients-root' : join(homedir(), '.cache', 'reexec-test', 'clients-root');
}

/** The clients root if it holds buildbox-casd, else why not. */
export function clientsRoot() {
  const root = clientsRootPath();
  if (process.getuid?.() !== 0) return { skip: 'running commands in the clients root needs root' };
  if (!existsSync(join(root, 'usr', 'bin', 'buildbox-casd'))) return { skip: `no clients root with buildbox-casd at ${root} (build it with \`sh test/e2e/harness/clients-root.sh create ${root}\`, or run the e2e tests once)` };
  return { root };
}

/** A folder under the clients root's /tmp: `work` on the host, `inside` as the root sees it. */
export function clientsWork(root, prefix) {
  mkdirSync(join(root, 'tmp'), { recursive: true });
  const work = mkdtempSync(join(root, 'tmp', prefix));
  return { work, inside: work.slice(root.length) };
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Resolves once something accepts TCP connections on 127.0.0.1:port (or rejects after timeoutMs, or when `dead()` says so). */
export async function waitForPort(port, timeoutMs, dead = () => undefined) {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise((resolve) => {
      const c = netConnect(port, '127.0.0.1');
      c.once('connect', () => (c.destroy(), resolve(true)));
      c.once('error', () => resolve(false));
    });
    if (ok) return;
    const why = dead();
    if (why) throw new Error(why);
    if (Date.now() > until) throw new Error(`nothing listens on 127.0.0.1:${port} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Spawned in its own process group, output kept; stop() signals the whole group and waits. */
function group(argv, opts = {}) {
  const child = spawn(argv[0], argv.slice(1), { cwd: opts.cwd ?? REPO_ROOT, env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let output = '';
  child.stdout.on('data', (b) => (output = (output + b).slice(-20000)));
  child.stderr.on('data', (b) => (output = (output + b).slice(-20000)));
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  return {
    child,
    output: () => output,
    exited,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      try {
        process.kill(-child.pid, 'SIGTERM');
      } catch {
        return;
      }
      const timer = setTimeout(() => {
        try {
          process.kill(-child.pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }, 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/**
 * `reexec start` (dist/) on 127.0.0.1:PORT with its own data dir, fsync and every other setting
 * at their defaults (execution on): the daemon as users run it, in a process of its own.
 */
export async function startReexec(dataDir, extraArgs = []) {
  const port = await freePort();
  const p = group([process.execPath, join(REPO_ROOT, 'bin', 'run.js'), 'start', '--listen', `127.0.0.1:${port}`, '--data-dir', dataDir, '--log-format', 'json', ...extraArgs]);
  await waitForPort(port, 60_000, () => (p.child.exitCode !== null ? `reexec start exited ${p.child.exitCode}:\n${p.output()}` : undefined));
  return { ...p, port, pid: p.child.pid, url: `grpc://127.0.0.1:${port}` };
}

/**
 * buildbox-casd 1.4 of the clients root as a server (CAS, ByteStream, ActionCache, and
 * Execution through buildbox-run-bubblewrap), its cache in `dirInside` (a path inside the root).
 */
export async function startCasd(root, dirInside) {
  const port = await freePort();
  const p = group(['sh', CLIENTS_ROOT_SCRIPT, 'run', root, 'buildbox-casd', `--bind=127.0.0.1:${port}`, '--buildbox-run=buildbox-run-bubblewrap', `${dirInside}/cache`]);
  await waitForPort(port, 60_000, () => (p.child.exitCode !== null ? `buildbox-casd exited ${p.child.exitCode}:\n${p.output()}` : undefined));
  return { ...p, port, url: `grpc://127.0.0.1:${port}` };
}

/** `argv` inside the clients root, from `cwd` (inside the root): exit code, output, and wall-clock ms. */
export function runInRoot(root, argv, { cwd, env = {} } = {}) {
  const envArgs = Object.entries(env).map(([k, v]) => `${k}=${v}`);
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    const child = spawn('sh', [CLIENTS_ROOT_SCRIPT, 'run', root, 'env', ...(cwd ? ['-C', cwd] : []), ...envArgs, ...argv], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (b) => (output = (output + b).slice(-8000)));
    child.stderr.on('data', (b) => (output = (output + b).slice(-8000)));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, output, ms: Number(process.hrtime.bigint() - started) / 1e6 }));
  });
}

/** Resident and peak resident set of a process, in bytes, from /proc. */
export function memoryOf(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (key) => Number((new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status) ?? [])[1] ?? NaN) * 1024;
  return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
}

export const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length === 0 ? NaN : s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

/**
 * A minimal busybox root in `dest` (a host path inside the clients root) from the clients
 * root's static busybox: usr/bin/busybox with `true` and `sh` as links, bin -> usr/bin.
 */
export function busyboxRoot(root, dest) {
  mkdirSync(join(dest, 'usr', 'bin'), { recursive: true });
  copyFileSync(join(root, 'usr', 'bin', 'busybox'), join(dest, 'usr', 'bin', 'busybox'));
  chmodSync(join(dest, 'usr', 'bin', 'busybox'), 0o755);
  for (const applet of ['true', 'sh']) symlinkSync('busybox', join(dest, 'usr', 'bin', applet));
  symlinkSync('usr/bin', join(dest, 'bin'));
}
