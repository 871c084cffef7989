import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root (this file is test/helpers/daemon-process.ts). */
export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
/** `reexec` as users run it: bin/run.js, on the build in dist/. */
export const REEXEC_BIN = join(REPO_ROOT, 'bin', 'run.js');

/**
 * A daemon run as root (as CI runs the tests) runs actions as an unprivileged user, which must
 * reach the data dir: let it through the tests' own temporary directories above it (reexec-*,
 * made 0700 by mkdtemp), as an administrator would. Traversal only: nothing becomes listable.
 */
export function openForRunAs(dataDir: string): void {
  if (process.getuid?.() !== 0) return;
  for (let d = dirname(resolve(dataDir)); d !== dirname(d); d = dirname(d)) {
    if (!basename(d).startsWith('reexec-')) continue;
    const mode = statSync(d).mode & 0o7777;
    if ((mode & 0o001) === 0) chmodSync(d, mode | 0o001);
  }
}

/**
 * A loopback TCP port free right now, for a daemon that must listen on a port known before
 * it starts (one named in its config file, or the same one again after a restart).
 */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

export interface DaemonProcessOptions {
  /** Use this data dir (kept afterwards); default: a fresh temporary one, removed by stop(). */
  dataDir?: string;
  /** Addresses to listen on; default one ephemeral loopback port. */
  listen?: string[];
  /** More arguments for `reexec start` (e.g. ['--config', FILE]). */
  args?: string[];
  env?: NodeJS.ProcessEnv;
  /** How long to wait for the "serving" log line. */
  startTimeoutMs?: number;
  /** Run inside this network namespace (ip netns exec), another host to the test. */
  netns?: string;
}

export interface DaemonProcess {
  child: ChildProcess;
  pid: number;
  /** Every address it serves on, as logged (e.g. "127.0.0.1:41234"). */
  addresses: string[];
  /** The first address. */
  address: string;
  /** Port of the first TCP address. */
  port: number;
  dataDir: string;
  /** Everything the daemon wrote on stdout and stderr so far. */
  output(): string;
  /** Log lines at level "error" (JSON) so far: a real client run should leave none. */
  errorLines(): string[];
  /** Still running (not crashed, not stopped). */
  running(): boolean;
  /** Resolves when the process has exited. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGTERM, wait for a clean exit (SIGKILL after timeoutMs); removes a temporary data dir. */
  stop(timeoutMs?: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGKILL (a crash): nothing is flushed or released; the data dir stays. */
  kill(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/**
 * Starts `node bin/run.js start` as a separate process (the built daemon in dist/, as users
 * run it) on an ephemeral port and resolves once it logs the addresses it serves on.
 */
export async function startDaemonProcess(opts: DaemonProcessOptions = {}): Promise<DaemonProcess> {
  if (!existsSync(join(REPO_ROOT, 'dist', 'commands', 'start.js'))) {
    throw new Error('dist/ is not built: run `npm run build` first (`npm test` does it)');
  }
  const ownDir = opts.dataDir === undefined;
  const dataDir = opts.dataDir ?? mkdtempSync(join(tmpdir(), 'reexec-proc-'));
  openForRunAs(dataDir);
  const listen = opts.listen ?? ['127.0.0.1:0'];
  const args = [REEXEC_BIN, 'start', ...listen.flatMap((l) => ['--listen', l]), '--data-dir', dataDir, '--log-format', 'json', ...(opts.args ?? [])];
  const command = opts.netns ? ['ip', 'netns', 'exec', opts.netns, process.execPath, ...args] : [process.execPath, ...args];
  const child = spawn(command[0]!, command.slice(1), {
    cwd: REPO_ROOT,
    env: { ...process.env, ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  const addresses = await new Promise<string[]>((resolve, reject) => {
    let pending = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`reexec did not report serving within ${opts.startTimeoutMs ?? 30_000} ms:\n${out}`));
    }, opts.startTimeoutMs ?? 30_000);
    const onData = (chunk: Buffer): void => {
      const text = chunk.toString('utf8');
      out += text;
      pending += text;
      let nl: number;
      while ((nl = pending.indexOf('\n')) >= 0) {
        const line = pending.slice(0, nl).trim();
        pending = pending.slice(nl + 1);
        if (!line.startsWith('{')) continue;
        try {
          const entry = JSON.parse(line) as { addresses?: unknown };
          if (Array.isArray(entry.addresses) && entry.addresses.length > 0) {
            clearTimeout(timer);
            resolve(entry.addresses.map(String));
          }
        } catch {
          /* not a log line */
        }
      }
    };
    child.stdout!.on('data', (c: Buffer) => (out += c.toString('utf8')));
    child.stderr!.on('data', onData);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    void exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`reexec exited (code ${code}, signal ${signal}) before serving:\n${out}`));
    });
  }).catch((err: Error) => {
    if (ownDir) rmSync(dataDir, { recursive: true, force: true });
    throw err;
  });
  const address = addresses[0]!;
  const tcp = addresses.find((a) => !a.startsWith('unix:'));
  const port = tcp ? Number(tcp.slice(tcp.lastIndexOf(':') + 1)) : 0;

  const waitExit = async (timeoutMs: number) => {
    let timer: NodeJS.Timeout | undefined;
    const res = await Promise.race([
      exited,
      new Promise<undefined>((r) => {
        timer = setTimeout(() => r(undefined), timeoutMs);
      }),
    ]);
    clearTimeout(timer);
    if (res) return res;
    child.kill('SIGKILL');
    return exited;
  };
  const running = () => child.exitCode === null && child.signalCode === null;

  return {
    child,
    pid: child.pid!,
    addresses,
    address,
    port,
    dataDir,
    output: () => out,
    errorLines: () =>
      out.split('\n').filter((line) => {
        if (!line.startsWith('{')) return false;
        try {
          return (JSON.parse(line) as { level?: string }).level === 'error';
        } catch {
          return false;
        }
      }),
    running,
    exited,
    async stop(timeoutMs = 15_000) {
      if (running()) child.kill('SIGTERM');
      const res = await waitExit(timeoutMs);
      if (ownDir) rmSync(dataDir, { recursive: true, force: true });
      return res;
    },
    async kill() {
      if (running()) child.kill('SIGKILL');
      return exited;
    },
  };
}
