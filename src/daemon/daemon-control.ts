import { readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { shellQuote } from '../util/shell-quote.js';
import { lockHolder, type LockHolder } from './data-dir-lock.js';
import { processAlive, processArgv, processInfo, sameProcess, systemdUnitOf } from './process-identity.js';

/**
 * Finding a running daemon and stopping it: what `reexec stop` does, and what `reexec start`
 * checks before it writes a pid file. The data dir's lock is the authority (it names the
 * process that holds the store, foreground or detached); a pid file is what `start --detach`
 * leaves for people and init systems, checked before it is believed.
 */

/** Where `start --detach` writes the daemon's pid unless told otherwise. */
export const defaultPidFile = (dataDir: string): string => join(dataDir, 'daemon.pid');

/** Write `PID\n` atomically: a reader never sees a half-written file. */
export function writePidFile(path: string, pid = process.pid): void {
  const tmp = `${path}.tmp-${pid}`;
  writeFileSync(tmp, `${pid}\n`, { mode: 0o644 });
  renameSync(tmp, path);
}

/** Remove the pid file if it still names `pid` (another daemon may have written it since). */
export function removePidFile(path: string, pid = process.pid): void {
  if (readPid(path) === pid) rmSync(path, { force: true });
}

function readPid(path: string): number | undefined {
  try {
    const pid = Number.parseInt(readFileSync(path, 'utf8'), 10);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** Linux reports process start times in USER_HZ, 100 on every architecture Node runs on. */
const USER_HZ = 100;

function bootTimeMs(): number | undefined {
  try {
    const m = /^btime (\d+)$/m.exec(readFileSync('/proc/stat', 'utf8'));
    return m ? Number(m[1]) * 1000 : undefined;
  } catch {
    return undefined;
  }
}

/** Whether a command line is `reexec start` (through bin/run.js, an installed `reexec`, or npx). */
export function isReexecStart(argv: readonly string[]): boolean {
  const startAt = argv.indexOf('start');
  return startAt > 0 && argv.slice(0, startAt).some((a) => /(^|\/)(run\.js|reexec)$/.test(a));
}

/**
 * The pid a pid file names, if that process is a running reexec daemon that was there when
 * the file was written: a pid file outlives a crash, and its pid can be reused by anything
 * started since, so the process must have started before the file's last write (the daemon
 * writes it once serving) and run `reexec start`.
 */
export function pidFileOwner(path: string): { pid: number } | { stale: number } | undefined {
  const pid = readPid(path);
  if (pid === undefined) return undefined;
  if (!processAlive(pid)) return { stale: pid };
  const info = processInfo(pid);
  const boot = bootTimeMs();
  if (info && boot !== undefined) {
    const startedAt = boot + (info.startTicks * 1000) / USER_HZ;
    // btime has a second's resolution: allow for it.
    if (startedAt > statSync(path).mtimeMs + 2000) return { stale: pid };
  }
  const argv = processArgv(pid);
  if (argv && !isReexecStart(argv)) return { stale: pid };
  return { pid };
}

export type DaemonLookup =
  | { running: true; pid: number; startTicks?: number; via: 'lock' | 'pid-file'; systemdUnit?: { name: string; user: boolean } }
  | { running: false; why: string; stalePidFile?: string };

/**
 * The daemon to stop. With an explicit pid file, the process it names (checked as in
 * pidFileOwner); otherwise the process holding the data dir's lock, which is how a daemon
 * started in the foreground is found too.
 */
export function findDaemon(opts: { dataDir: string; pidFile?: string }): DaemonLookup {
  const unit = (pid: number): { systemdUnit?: { name: string; user: boolean } } => {
    const u = systemdUnitOf(pid);
    return u ? { systemdUnit: u } : {};
  };
  if (opts.pidFile) {
    const owner = pidFileOwner(opts.pidFile);
    if (owner === undefined) return { running: false, why: `no daemon pid in ${opts.pidFile}` };
    if ('stale' in owner) {
      return { running: false, why: `${opts.pidFile} names pid ${owner.stale}, which is not a running reexec daemon (a stale pid file)`, stalePidFile: opts.pidFile };
    }
    const startTicks = processInfo(owner.pid)?.startTicks;
    return { running: true, pid: owner.pid, ...(startTicks !== undefined ? { startTicks } : {}), via: 'pid-file', ...unit(owner.pid) };
  }
  let holder: LockHolder | undefined;
  try {
    holder = lockHolder(opts.dataDir);
  } catch (err) {
    throw new StopFailedError(`cannot read the lock of ${opts.dataDir}: ${(err as Error).message}`, 'Run this as the user the daemon runs as, or as root.');
  }
  // A lock written before locks recorded start times names only a pid: check what runs there.
  const argv = holder && holder.startTicks === undefined ? processArgv(holder.pid) : undefined;
  if (holder && argv && !(holder.role === 'gc' ? argv.includes('gc') : isReexecStart(argv))) holder = undefined;
  const pidFile = defaultPidFile(opts.dataDir);
  const stale = (): { stalePidFile?: string } => {
    const owner = pidFileOwner(pidFile);
    return owner && 'stale' in owner ? { stalePidFile: pidFile } : {};
  };
  if (!holder) return { running: false, why: `no reexec daemon holds the data dir ${opts.dataDir}`, ...stale() };
  if (holder.role === 'gc') return { running: false, why: `no daemon runs on ${opts.dataDir}: \`reexec gc\` (pid ${holder.pid}) holds it while it collects garbage` };
  return { running: true, pid: holder.pid, ...(holder.startTicks !== undefined ? { startTicks: holder.startTicks } : {}), via: 'lock', ...unit(holder.pid) };
}

export class StopFailedError extends Error {
  constructor(
    message: string,
    readonly suggestion?: string,
  ) {
    super(message);
    this.name = 'StopFailedError';
  }
}

export interface StopOutcome {
  /** drained: it finished running calls and closed the store itself; killed: SIGKILL after the timeout. */
  how: 'drained' | 'killed';
  seconds: number;
}

export type StopEvent = { kind: 'signalled'; signal: 'SIGTERM' | 'SIGKILL' } | { kind: 'waiting'; seconds: number };

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * SIGTERM (the daemon drains calls, stops running actions, flushes the store and exits), then
 * wait up to `timeoutMs` for the process to be gone; past it, SIGKILL (the store is crash-safe
 * and interrupted actions run again after the next start). `startTicks` guards every signal
 * against the pid having been reused meanwhile.
 */
export async function stopDaemon(
  pid: number,
  opts: { startTicks?: number; timeoutMs: number; killAfterTimeout: boolean; onEvent?: (e: StopEvent) => void; pollMs?: number },
): Promise<StopOutcome> {
  const t0 = Date.now();
  const poll = opts.pollMs ?? 100;
  const gone = (): boolean => !sameProcess(pid, opts.startTicks);
  const signal = (sig: 'SIGTERM' | 'SIGKILL'): void => {
    if (gone()) return;
    try {
      process.kill(pid, sig);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ESRCH') return;
      if (code === 'EPERM') {
        throw new StopFailedError(`not allowed to signal pid ${pid}: it runs as another user`, `Run this as that user, or as root (sudo reexec stop ...).`);
      }
      throw err;
    }
    opts.onEvent?.({ kind: 'signalled', signal: sig });
  };
  const waitGone = async (ms: number): Promise<boolean> => {
    const until = Date.now() + ms;
    let reported = Date.now();
    while (!gone()) {
      if (Date.now() >= until) return false;
      await sleep(poll);
      if (Date.now() - reported >= 5000) {
        reported = Date.now();
        opts.onEvent?.({ kind: 'waiting', seconds: Math.round((Date.now() - t0) / 1000) });
      }
    }
    return true;
  };
  signal('SIGTERM');
  if (await waitGone(opts.timeoutMs)) return { how: 'drained', seconds: (Date.now() - t0) / 1000 };
  if (!opts.killAfterTimeout) {
    throw new StopFailedError(
      `pid ${pid} is still running ${Math.round(opts.timeoutMs / 1000)} s after SIGTERM`,
      'It may still be finishing calls: wait, or run `reexec stop` again without --no-kill to end it with SIGKILL after the timeout.',
    );
  }
  signal('SIGKILL');
  if (await waitGone(10_000)) return { how: 'killed', seconds: (Date.now() - t0) / 1000 };
  throw new StopFailedError(`pid ${pid} survived SIGKILL for 10 s (stuck in the kernel: uninterruptible I/O?)`, `Look at it with: cat /proc/${pid}/stack; ps -o stat,wchan -p ${pid}`);
}

/** "reexec stop", with the flags that find the daemon that `start` was given. */
export function stopCommandFor(flags: { config?: string; dataDir?: string; pidFile?: string }, defaultDataDir: string): string {
  const parts = ['reexec stop'];
  if (flags.config) parts.push('--config', shellQuote(flags.config));
  if (flags.dataDir && flags.dataDir !== defaultDataDir) parts.push('--data-dir', shellQuote(flags.dataDir));
  if (flags.pidFile && flags.pidFile !== defaultPidFile(flags.dataDir ?? defaultDataDir)) parts.push('--pid-file', shellQuote(flags.pidFile));
  return parts.join(' ');
}
