import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { REPO_ROOT } from './daemon-process.js';
import { runClient, type ClientRun } from './run-client.js';

/**
 * The Debian testing root holding BuildStream 2, buildbox-casd, recc, trexe and casupload,
 * built by test/e2e/harness/clients-root.sh on first use and kept between runs in a cache
 * folder outside the repository:
 *   $REEXEC_CLIENTS_ROOT, else $XDG_CACHE_HOME/reexec-test/clients-root, else (root)
 *   /var/cache/reexec-test/clients-root, else ~/.cache/reexec-test/clients-root.
 * Commands run inside share the host's network: 127.0.0.1 inside is the host's loopback.
 */
export const CLIENTS_ROOT_SCRIPT = join(REPO_ROOT, 'test', 'e2e', 'harness', 'clients-root.sh');

const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;

export function clientsRootPath(): string {
  if (process.env.REEXEC_CLIENTS_ROOT) return process.env.REEXEC_CLIENTS_ROOT;
  if (process.env.XDG_CACHE_HOME) return join(process.env.XDG_CACHE_HOME, 'reexec-test', 'clients-root');
  return isRoot ? '/var/cache/reexec-test/clients-root' : join(homedir(), '.cache', 'reexec-test', 'clients-root');
}

export type ClientsRoot = { root: string; skip?: undefined; builtMs: number } | { root?: undefined; skip: string };

let prepared: ClientsRoot | undefined;

/**
 * The clients root, built (debootstrap, a few minutes) when absent or incomplete. Resolves to
 * a skip reason when it cannot be built here: not root, no debootstrap, no Debian mirror.
 * Any other failure to build it throws: that is a broken harness, not a missing tool.
 */
export function prepareClientsRoot(): ClientsRoot {
  if (prepared) return prepared;
  if (process.platform !== 'linux') return (prepared = { skip: 'the clients root is a Debian root filesystem: Linux only' });
  if (!isRoot) return (prepared = { skip: 'building and entering the clients root (debootstrap, mounts, pivot_root) needs root' });
  const root = clientsRootPath();
  const started = Date.now();
  const r = spawnSync('sh', [CLIENTS_ROOT_SCRIPT, 'create', root], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 256 * 1024 * 1024 });
  if (r.status === 3) return (prepared = { skip: r.stderr.trim().split('\n').pop() ?? 'the clients root cannot be built here' });
  if (r.status !== 0) {
    const tail = `${r.stdout}\n${r.stderr}`.trim().split('\n').slice(-40).join('\n');
    throw new Error(`building the clients root in ${root} failed (exit ${r.status ?? r.signal}):\n${tail}`);
  }
  return (prepared = { root, builtMs: Date.now() - started });
}

/**
 * Runs `argv` inside the clients root with a clean environment plus `env`, from `cwd` (a path
 * inside the root). No shell in between: names such as RECC_REMOTE_PLATFORM_reexec-sandbox
 * are not valid shell identifiers, and dash drops them from the environment it passes on.
 * Never throws on failure: the test asserts on the result.
 */
export function runInRoot(root: string, argv: readonly string[], opts: { cwd?: string; env?: Record<string, string>; timeoutMs?: number } = {}): Promise<ClientRun> {
  const envArgs = Object.entries(opts.env ?? {}).map(([k, v]) => `${k}=${v}`);
  return runClient('sh', [CLIENTS_ROOT_SCRIPT, 'run', root, 'env', ...(opts.cwd ? ['-C', opts.cwd] : []), ...envArgs, ...argv], {
    cwd: REPO_ROOT,
    timeoutMs: opts.timeoutMs ?? 300_000,
  });
}

/**
 * A fresh folder for one test under the clients root's /tmp, with home/ and tmp/ in it, so
 * that the clients' own files (BuildStream's, buildbox-casd's) go with the test's folder and
 * not into the cached root's /tmp. `work` is its host path, `inside` the same folder as
 * commands in the clients root see it.
 */
export function makeClientsWork(root: string, prefix: string): { work: string; inside: string } {
  mkdirSync(join(root, 'tmp'), { recursive: true });
  const work = mkdtempSync(join(root, 'tmp', prefix));
  mkdirSync(join(work, 'home'));
  mkdirSync(join(work, 'tmp'));
  return { work, inside: work.slice(root.length) };
}

/**
 * A busybox root filesystem in `dest` made from the clients root's static busybox (Debian's
 * busybox-static), or from `busybox` (e.g. a foreign one): applets as relative symlinks in
 * usr/bin, merged-/usr links, /etc/passwd, empty dev, proc and a sticky tmp.
 */
export function makeBusyboxSysroot(root: string, dest: string, busybox: string = join(root, 'usr', 'bin', 'busybox')): void {
  for (const d of ['usr/bin', 'usr/lib', 'etc', 'root', 'tmp', 'dev', 'proc']) mkdirSync(join(dest, d), { recursive: true });
  const installed = join(dest, 'usr', 'bin', 'busybox');
  copyFileSync(busybox, installed);
  chmodSync(installed, 0o755);
  // Applet names from the clients root's own busybox: listing them needs no emulation.
  const applets = execFileSync(join(root, 'usr', 'bin', 'busybox'), ['--list'], { encoding: 'utf8' }).split('\n').filter(Boolean);
  for (const a of applets) if (a !== 'busybox') symlinkSync('busybox', join(dest, 'usr', 'bin', a));
  symlinkSync('usr/bin', join(dest, 'bin'));
  symlinkSync('usr/bin', join(dest, 'sbin'));
  symlinkSync('usr/lib', join(dest, 'lib'));
  writeFileSync(join(dest, 'etc', 'passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
  writeFileSync(join(dest, 'etc', 'group'), 'root:x:0:\n');
  chmodSync(join(dest, 'tmp'), 0o1777);
}

/**
 * Copy programs of the clients root (e.g. /usr/bin/casupload) into a sysroot `dest`, with
 * their shared-library closure as `ldd` lists it inside the root: each file at the path the
 * loader finds it at (links resolved inside the root, not on the host), and the loader at
 * /lib64 (a link to usr/lib64). Programs in it run with LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu.
 */
export async function copyWithLibraries(root: string, programs: readonly string[], dest: string): Promise<void> {
  // For each program and library: "PATH<TAB>REAL PATH", both as the root sees them.
  const script = [
    'set -e',
    'for p in "$@"; do',
    '  printf "%s\\t%s\\n" "$p" "$(readlink -f "$p")"',
    '  ldd "$p" | awk \'$2 == "=>" && $3 ~ /^\\// { print $3 } $1 ~ /^\\// { print $1 }\' | while read -r lib; do printf "%s\\t%s\\n" "$lib" "$(readlink -f "$lib")"; done',
    'done',
  ].join('\n');
  const run = await runInRoot(root, ['sh', '-c', script, 'sh', ...programs], { timeoutMs: 60_000 });
  if (run.code !== 0) throw new Error(`listing the libraries of ${programs.join(', ')} in the clients root failed:\n${run.output}`);
  mkdirSync(join(dest, 'usr', 'lib64'), { recursive: true });
  if (!existsSync(join(dest, 'lib64'))) symlinkSync('usr/lib64', join(dest, 'lib64'));
  for (const line of run.output.split('\n')) {
    const [path, real] = line.split('\t');
    if (!path || !real || !path.startsWith('/')) continue;
    const target = join(dest, path.replace(/^\/lib64\//, '/usr/lib64/').replace(/^\/lib\//, '/usr/lib/'));
    if (existsSync(target)) continue;
    mkdirSync(dirname(target), { recursive: true });
    copyFileSync(join(root, real), target);
    chmodSync(target, 0o755);
  }
}
