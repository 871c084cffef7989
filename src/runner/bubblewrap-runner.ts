import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { RunRequest, RunResult, Runner, SandboxPolicy } from './runner.js';
import { findExecutable } from '../util/find-executable.js';
import { SandboxSpawner } from './sandbox-spawner.js';

export type { RunRequest, RunResult };

/** The ISA this host runs natively, canonical (the linux32 personality is for x86-32 on x86-64). */
const HOST_ARCH = process.arch === 'x64' ? 'x86-64' : process.arch;

/** Runs actions under bubblewrap: the one place that spawns them (BuildExecutor's Runner). */
export class BubblewrapRunner implements Runner {
  run(req: RunRequest): Promise<RunResult> {
    return runInBubblewrap(req);
  }
}

/** Where host-tools actions see their input root (the host filesystem is read-only around it). */
export const HOST_TOOLS_ROOT = '/tmp/reexec-build';

/** Longest path connect() and bind() take for a UNIX socket (sun_path holds 108 bytes with the NUL). */
export const MAX_SOCKET_PATH_BYTES = 107;

/**
 * Builds bubblewrap's argument list for an action. Pure, so it is tested without spawning.
 *
 * Rootfs sandbox (BuildStream): the input root is "/", fresh procfs in a PID namespace, /dev
 * with a /dev/shm tmpfs, uid/gid 0 (or unixUID/unixGID) in a user namespace, new network, UTS
 * and IPC namespaces unless network=on, capabilities dropped, no nested user namespaces.
 * Host-tools sandbox (Bazel, recc): the host's filesystem read-only, the input root at
 * HOST_TOOLS_ROOT, the same isolation otherwise.
 */
export function bubblewrapArgs(req: Omit<RunRequest, 'stdoutPath' | 'stderrPath' | 'timeoutMs' | 'signal'>, statusFd: number): string[] {
  const { root: staged, policy: platform } = req;
  const a: string[] = ['--unshare-user', '--uid', String(platform.uid), '--gid', String(platform.gid), '--unshare-pid', '--unshare-ipc', '--unshare-uts', '--unshare-cgroup-try'];
  if (!platform.network) a.push('--unshare-net');
  a.push('--hostname', 'reexec', '--die-with-parent', ...(req.interactive ? [] : ['--new-session']), '--cap-drop', 'ALL', '--disable-userns', '--json-status-fd', String(statusFd));
  let cwd: string;
  if (platform.kind === 'host-tools') {
    const root = (req.hostToolsRoot ?? '/').replace(/(.)\/+$/, '$1');
    // /tmp holds the input root (HOST_TOOLS_ROOT): always an empty tmpfs. /run, /var/tmp and
    // the hidden paths come with hostMounts: /run holds the host's sockets (D-Bus, container
    // engines, ...), and a unix socket on a read-only mount still accepts connections.
    a.push('--ro-bind', root, '/', '--proc', '/proc', '--dev', '/dev', '--tmpfs', '/dev/shm', '--tmpfs', '/tmp');
    for (const m of req.hostMounts ?? []) {
      if (m.kind === 'tmpfs') a.push('--tmpfs', m.path);
      else if (m.kind === 'null') a.push('--ro-bind', '/dev/null', m.path);
      else a.push('--ro-bind', join(root, m.path), m.path);
    }
    a.push('--bind', staged.dir, HOST_TOOLS_ROOT);
    for (const m of staged.mounts) a.push(m.kind === 'ro-bind' ? '--ro-bind' : '--bind', m.source, HOST_TOOLS_ROOT + m.dest);
    cwd = join(HOST_TOOLS_ROOT, req.workingDirectory);
  } else {
    a.push(staged.readOnly ? '--ro-bind' : '--bind', staged.dir, '/');
    for (const m of staged.mounts) a.push(m.kind === 'ro-bind' ? '--ro-bind' : '--bind', m.source, m.dest);
    a.push('--proc', '/proc', '--dev', '/dev', '--tmpfs', '/dev/shm');
    if (!staged.tmpWritable) a.push('--tmpfs', '/tmp');
    cwd = join('/', req.workingDirectory);
  }
  for (const b of req.binds ?? []) a.push('--bind', b.source, b.dest);
  a.push('--chdir', cwd, '--', ...req.argv);
  return a;
}

const tools = new Map<string, string | undefined>();
function findTool(name: string): string | undefined {
  if (!tools.has(name)) {
    tools.set(name, findExecutable(name));
  }
  return tools.get(name);
}

export function findBubblewrap(): string | undefined {
  return findTool('bwrap');
}

/** An action that asks for x86-32 alone, on an x86-64 host, runs under the linux32 personality. */
export function needsLinux32(platform: Pick<SandboxPolicy, 'isas'>): boolean {
  return platform.isas.length === 1 && platform.isas[0] === 'x86-32' && HOST_ARCH === 'x86-64';
}

/**
 * Wait until a sandbox's init has exited. A namespace's init turns into a zombie only after the
 * kernel has killed and waited for every other process in its namespace, so a zombie counts.
 */
async function waitUntilGone(pid: number | undefined, maxMs: number): Promise<void> {
  if (pid === undefined) return;
  const deadline = Date.now() + maxMs;
  while (Date.now() < deadline) {
    let stat: string;
    try {
      stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    } catch {
      return;
    }
    if (/\) [ZX] /.test(stat)) return;
    await new Promise((r) => setTimeout(r, 10));
  }
}

/**
 * The program and arguments that run a request's sandbox, with bwrap's JSON status on fd 3:
 * bwrap, or `setarch i686 bwrap` for x86-32 on an x86-64 host (the linux32 personality, so
 * that uname -m says i686, inherited by bwrap's children). Or what is missing on `where`.
 */
export function sandboxCommand(req: Omit<RunRequest, 'stdoutPath' | 'stderrPath' | 'timeoutMs' | 'signal'>, where: string): { file: string; args: string[] } | { error: string } {
  const bwrap = findBubblewrap();
  if (!bwrap) return { error: `bubblewrap (bwrap) is not installed on ${where}: install it with \`sudo apt-get install -y bubblewrap\`` };
  const args = bubblewrapArgs(req, 3);
  if (!needsLinux32(req.policy)) return { file: bwrap, args };
  const setarch = findTool('setarch');
  if (!setarch) return { error: `x86-32 actions need setarch (util-linux) on ${where}: install it with \`sudo apt-get install -y util-linux\`` };
  return { file: setarch, args: ['i686', bwrap, ...args] };
}

/** What keeps a sandbox from being set up on this machine (a missing program), with the fix. */
export class SandboxSetupError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SandboxSetupError';
  }
}

/** The exit code bwrap reported on its JSON status stream, if it got that far. */
function reportedExitCode(status: string): number | undefined {
  let exitCode: number | undefined;
  for (const line of status.split('\n')) {
    try {
      const j = JSON.parse(line) as { 'exit-code'?: number };
      if (j['exit-code'] !== undefined) exitCode = j['exit-code'];
    } catch {
      /* a blank or partial line */
    }
  }
  return exitCode;
}

/**
 * A sandbox attached to this process's terminal (`reexec shell`): stdin, stdout and stderr
 * inherited, the terminal's Ctrl-C and Ctrl-\ left to what runs inside. Resolves to its exit
 * status. Spawned here, beside the actions, so that both run the same way.
 */
export async function runAttached(req: Omit<RunRequest, 'stdoutPath' | 'stderrPath' | 'timeoutMs' | 'signal'>, onCommand?: (file: string, args: string[]) => void): Promise<number> {
  const cmd = sandboxCommand(req, 'this machine');
  if ('error' in cmd) throw new SandboxSetupError(cmd.error);
  onCommand?.(cmd.file, cmd.args);
  const child = spawn(cmd.file, cmd.args, { env: Object.fromEntries(req.env), stdio: ['inherit', 'inherit', 'inherit', 'pipe'] });
  const ignore = (): void => undefined;
  process.on('SIGINT', ignore);
  process.on('SIGQUIT', ignore);
  let status = '';
  child.stdio[3]!.on('data', (b: Buffer) => (status += b.toString()));
  try {
    const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => {
      child.once('error', () => resolve([127, null]));
      child.once('close', (c, s) => resolve([c, s]));
    });
    return reportedExitCode(status) ?? code ?? (signal ? 128 : 1);
  } finally {
    process.off('SIGINT', ignore);
    process.off('SIGQUIT', ignore);
  }
}

/** Spawns the actions' sandboxes off the daemon's main thread (see SandboxSpawner). */
const spawner = new SandboxSpawner();

/** Runs one action under bubblewrap and reports how it ended. The one place that spawns actions. */
export async function runInBubblewrap(req: RunRequest): Promise<RunResult> {
  const startedAt = new Date();
  const cmd = sandboxCommand(req, 'the server host');
  if ('error' in cmd) return { exitCode: -1, timedOut: false, cancelled: false, setupError: cmd.error, startedAt, completedAt: new Date() };
  const { file, args } = cmd;
  if (process.env.REEXEC_DEBUG_BWRAP) process.stderr.write(JSON.stringify(args) + '\n');
  // With runAs, libuv drops supplementary groups, then sets the gid and the uid, before exec.
  const as = req.runAs ? { uid: req.runAs.uid, gid: req.runAs.gid, cwd: '/' } : {};
  let status = '';
  const child = spawner.spawn({ file, args, env: Object.fromEntries(req.env), stdoutPath: req.stdoutPath, stderrPath: req.stderrPath, ...as }, (data) => (status += data));
  let pid: number | undefined;
  void child.pid.then((p) => (pid = p));
  let timedOut = false;
  let cancelled = false;
  // The host pid of the sandbox's init (PID 1 of its namespace), from bwrap's status stream.
  const sandboxInit = (): number | undefined => {
    const m = /"child-pid":\s*(\d+)/.exec(status);
    return m ? Number(m[1]) : undefined;
  };
  const kill = (): void => {
    // bwrap's process group, and the sandbox's init, which --new-session put in a session of
    // its own: when a PID namespace's init dies, the kernel kills everything else in it.
    for (const target of [pid === undefined ? undefined : -pid, sandboxInit()]) {
      if (target === undefined) continue;
      try {
        process.kill(target, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
  };
  // Killed as soon as its pid is known, when that comes after the timeout or the cancel.
  void child.pid.then(() => (timedOut || cancelled) && kill());
  const timer = setTimeout(() => {
    timedOut = true;
    kill();
  }, req.timeoutMs);
  const onAbort = (): void => {
    cancelled = true;
    kill();
  };
  req.signal?.addEventListener('abort', onAbort, { once: true });
  // Cancelled while its inputs were staged: an already aborted signal fires no event.
  if (req.signal?.aborted) onAbort();
  const end = await child.end;
  if ('error' in end) {
    clearTimeout(timer);
    req.signal?.removeEventListener('abort', onAbort);
    // Spawned but lost (the spawner died): the sandbox died with it (--die-with-parent).
    if (sandboxInit() !== undefined) await waitUntilGone(sandboxInit(), 10_000);
    return { exitCode: -1, timedOut, cancelled, setupError: `could not run the sandbox: ${end.error}`, startedAt, completedAt: new Date() };
  }
  const [code, sig] = [end.code, end.signal];
  clearTimeout(timer);
  req.signal?.removeEventListener('abort', onAbort);
  const completedAt = new Date();
  const childStarted = /"child-pid":\s*\d+/.test(status);
  const exitCode = reportedExitCode(status);
  if (timedOut || cancelled) {
    // Report the end only once the action's processes are gone: the namespace's init is reaped
    // after the kernel has killed every other process in it.
    await waitUntilGone(sandboxInit(), 10_000);
    return { exitCode: exitCode ?? 137, timedOut, cancelled, startedAt, completedAt };
  }
  if (!childStarted) {
    let why = '';
    try {
      why = readFileSync(req.stderrPath, 'utf8').trim().split('\n').slice(-3).join(' ');
    } catch {
      /* nothing written */
    }
    return {
      exitCode: -1,
      timedOut,
      cancelled,
      setupError: `the sandbox could not be set up (bwrap exited ${code ?? sig}): ${why || 'no message'}. Check that user namespaces are enabled (sysctl kernel.unprivileged_userns_clone=1) and that \`reexec init\` reports bubblewrap working`,
      startedAt,
      completedAt,
    };
  }
  return { exitCode: exitCode ?? code ?? 128 + 9, timedOut, cancelled, startedAt, completedAt };
}
