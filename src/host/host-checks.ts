import { readFileSync, statSync } from 'node:fs';
import { arch, endianness, machine, platform, release } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { CREATE_RUN_AS_USER, lookupRunAsOrError, RUN_AS_USER, RunAsError, type RunAs } from './run-as.js';
import { findExecutable } from '../util/find-executable.js';

/**
 * What the host offers remote execution: the ISA it runs natively, a working bubblewrap
 * sandbox (which needs user namespaces), and QEMU user mode through binfmt_misc for foreign
 * ISAs. Each check says what it found and, when it fails, the exact command that fixes it.
 *
 * Everything the checks read or run goes through a HostProbe, so tests can describe any host.
 */
export interface HostCheck {
  name: string;
  ok: boolean;
  detail: string;
  /** A command that fixes the problem, ready to paste (with sudo unless we run as root). */
  fix?: string;
}

export interface RunResult {
  /** undefined when the process could not be started or was killed. */
  exitCode: number | undefined;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  durationMs: number;
  /** Why it failed to start or was killed, if it did. */
  error?: string;
}

/** The host as the checks see it. */
export interface HostProbe {
  platform: string;
  /** Node's process.arch. */
  arch: string;
  /** `uname -m`. */
  machine: string;
  endianness: 'BE' | 'LE';
  /** Kernel release, `uname -r`. */
  release: string;
  isRoot: boolean;
  /** A file's text, or undefined if it cannot be read. */
  readText(path: string): string | undefined;
  exists(path: string): boolean;
  /** The first executable of that name in PATH. */
  which(bin: string): string | undefined;
  /** Run a command, as another user when `as` is given (root only). */
  run(file: string, args: readonly string[], timeoutMs: number, as?: { uid: number; gid: number }): Promise<RunResult>;
  /**
   * Who actions would run as (execution.run-as: auto): for root, the unprivileged user, or
   * why there is none; for anyone else, the daemon's own user.
   */
  runAs(): RunAs | RunAsError;
}

export const BINFMT_DIR = '/proc/sys/fs/binfmt_misc';
export const BWRAP_TIMEOUT_MS = 5000;

/** QEMU user-mode targets reexec can use for foreign ISAs, by QEMU's name, with BuildStream's. */
export const QEMU_TARGETS: ReadonlyArray<{ qemu: string; isa: string }> = [
  { qemu: 'aarch64', isa: 'aarch64' },
  { qemu: 'arm', isa: 'aarch32' },
  { qemu: 'ppc64le', isa: 'power-isa-le' },
  { qemu: 's390x', isa: 's390x' },
  { qemu: 'riscv64', isa: 'rv64g' },
  { qemu: 'x86_64', isa: 'x86-64' },
];

/**
 * Node's process.arch → BuildStream's ISA name (what BuildStream sends as the ISA platform
 * property), or undefined when BuildStream has no name for it.
 */
export function buildStreamIsa(nodeArch: string, endian: 'BE' | 'LE' = 'LE'): string | undefined {
  switch (nodeArch) {
    case 'x64':
      return 'x86-64';
    case 'ia32':
      return 'x86-32';
    case 'arm64':
      return endian === 'BE' ? 'aarch64-be' : 'aarch64';
    case 'arm':
      return 'aarch32';
    case 'ppc64':
      return endian === 'BE' ? 'power-isa-be' : 'power-isa-le';
    case 'riscv64':
      return 'rv64g';
    case 'loong64':
      return 'la64v100';
    default:
      return undefined;
  }
}

/** The QEMU target names this host runs natively, which need no emulator. */
function nativeQemuTargets(nodeArch: string): string[] {
  switch (nodeArch) {
    case 'x64':
      return ['x86_64'];
    case 'arm64':
      return ['aarch64'];
    case 'ppc64':
      return ['ppc64le'];
    case 's390x':
      return ['s390x'];
    case 'riscv64':
      return ['riscv64'];
    case 'arm':
      return ['arm'];
    default:
      return [];
  }
}

/** The QEMU targets worth checking on this host: the foreign ones. */
export function foreignQemuTargets(nodeArch: string): Array<{ qemu: string; isa: string }> {
  const native = nativeQemuTargets(nodeArch);
  return QEMU_TARGETS.filter((t) => !native.includes(t.qemu));
}

/** The real host. */
export function systemProbe(env: NodeJS.ProcessEnv = process.env): HostProbe {
  return {
    platform: platform(),
    arch: arch(),
    machine: machine(),
    endianness: endianness(),
    release: release(),
    isRoot: typeof process.getuid === 'function' && process.getuid() === 0,
    readText(path) {
      try {
        return readFileSync(path, 'utf8');
      } catch {
        return undefined;
      }
    },
    exists(path) {
      try {
        statSync(path);
        return true;
      } catch {
        return false;
      }
    },
    which(bin) {
      return findExecutable(bin, env['PATH']);
    },
    runAs: () => lookupRunAsOrError(),
    async run(file, args, timeoutMs, as) {
      const r = await execa(file, args, { timeout: timeoutMs, reject: false, stdin: 'ignore', env: { LC_ALL: 'C' }, ...(as ? { uid: as.uid, gid: as.gid, cwd: '/' } : {}) });
      return {
        exitCode: r.exitCode,
        stdout: String(r.stdout ?? ''),
        stderr: String(r.stderr ?? ''),
        timedOut: r.timedOut,
        durationMs: Math.round(r.durationMs),
        error: r.failed && r.exitCode === undefined ? r.shortMessage : undefined,
      };
    },
  };
}

/** The system's package manager, for install commands. Debian's apt-get when in doubt. */
type PackageManager = 'apt-get' | 'dnf' | 'zypper' | 'pacman';

function packageManager(probe: HostProbe): PackageManager {
  for (const pm of ['apt-get', 'dnf', 'zypper', 'pacman'] as const) if (probe.which(pm)) return pm;
  return 'apt-get';
}

/** Commands that fix things, phrased for the user running them. */
class Fixes {
  private readonly sudo: string;
  readonly pm: PackageManager;

  constructor(private readonly probe: HostProbe) {
    this.sudo = probe.isRoot ? '' : 'sudo ';
    this.pm = packageManager(probe);
  }

  install(packages: string[]): string {
    const list = packages.join(' ');
    switch (this.pm) {
      case 'apt-get':
        return `${this.sudo}apt-get install -y ${list}`;
      case 'dnf':
        return `${this.sudo}dnf install -y ${list}`;
      case 'zypper':
        return `${this.sudo}zypper install -y ${list}`;
      case 'pacman':
        return `${this.sudo}pacman -S --needed --noconfirm ${list}`;
    }
  }

  sysctl(key: string, value: string | number): string {
    return `${this.sudo}sysctl -w ${key}=${value}`;
  }

  /** Write a value into a /proc file. */
  write(path: string, value: string): string {
    return this.probe.isRoot ? `echo ${value} > ${path}` : `echo ${value} | sudo tee ${path} > /dev/null`;
  }

  /** The packages that provide QEMU user mode with binfmt registrations using the F flag. */
  qemuPackages(): string[] {
    switch (this.pm) {
      case 'apt-get':
        return ['qemu-user-static', 'binfmt-support'];
      case 'dnf':
        return ['qemu-user-static'];
      case 'zypper':
        return ['qemu-linux-user'];
      case 'pacman':
        return ['qemu-user-static', 'qemu-user-static-binfmt'];
    }
  }

  /** Register (all, or one) QEMU binfmt entries from the distribution's definitions. */
  binfmtEnable(entry?: string): string {
    if (this.probe.which('update-binfmts') || this.pm === 'apt-get') {
      return `${this.sudo}update-binfmts --enable${entry ? ` ${entry}` : ''}`;
    }
    return `${this.sudo}systemctl restart systemd-binfmt`;
  }

  mountBinfmt(): string {
    return `${this.sudo}mount -t binfmt_misc binfmt_misc ${BINFMT_DIR} && ${this.binfmtEnable()}`;
  }
}

const firstLine = (s: string): string => s.trim().split('\n')[0]?.trim() ?? '';

function isaCheck(probe: HostProbe): HostCheck {
  const isa = buildStreamIsa(probe.arch, probe.endianness);
  return isa
    ? { name: 'isa', ok: true, detail: `${isa} (uname -m: ${probe.machine})` }
    : {
        name: 'isa',
        ok: false,
        detail: `${probe.machine} (node: ${probe.arch}) has no BuildStream ISA name; BuildStream cannot target this host natively`,
      };
}

function kernelCheck(probe: HostProbe): HostCheck {
  if (probe.platform !== 'linux') {
    return { name: 'kernel', ok: false, detail: `${probe.platform} ${probe.release}: reexec runs actions only on Linux` };
  }
  return { name: 'kernel', ok: true, detail: `Linux ${probe.release}` };
}

interface UserNsState {
  check: HostCheck;
  /** The command that lifts the restriction, when one applies. */
  fix?: string;
}

function userNamespaceCheck(probe: HostProbe, fixes: Fixes): UserNsState {
  const readInt = (path: string): number | undefined => {
    const text = probe.readText(path);
    if (text === undefined) return undefined;
    const n = Number.parseInt(text.trim(), 10);
    return Number.isNaN(n) ? undefined : n;
  };
  const max = readInt('/proc/sys/user/max_user_namespaces');
  const clone = readInt('/proc/sys/kernel/unprivileged_userns_clone');
  const apparmor = readInt('/proc/sys/kernel/apparmor_restrict_unprivileged_userns');
  const facts = [
    max === undefined ? 'user.max_user_namespaces absent' : `user.max_user_namespaces=${max}`,
    clone === undefined ? 'kernel.unprivileged_userns_clone absent (no Debian restriction)' : `kernel.unprivileged_userns_clone=${clone}`,
  ];
  if (apparmor !== undefined) facts.push(`kernel.apparmor_restrict_unprivileged_userns=${apparmor}`);
  const detail = facts.join(', ');
  if (max === 0) {
    const fix = fixes.sysctl('user.max_user_namespaces', 15000);
    return { check: { name: 'user-namespaces', ok: false, detail: `disabled: ${detail}`, fix }, fix };
  }
  // Root may create user namespaces whatever the unprivileged knobs say, but a daemon run as
  // root runs its actions as an unprivileged user (execution.run-as): the knobs apply to it.
  if (clone === 0) {
    const fix = fixes.sysctl('kernel.unprivileged_userns_clone', 1);
    return { check: { name: 'user-namespaces', ok: false, detail: `root only: ${detail}`, fix }, fix };
  }
  if (apparmor === 1) {
    const fix = fixes.sysctl('kernel.apparmor_restrict_unprivileged_userns', 0);
    return { check: { name: 'user-namespaces', ok: false, detail: `restricted by AppArmor: ${detail}`, fix }, fix };
  }
  return { check: { name: 'user-namespaces', ok: true, detail: `available: ${detail}` } };
}

async function bubblewrapCheck(probe: HostProbe, fixes: Fixes, userns: UserNsState, runAs: RunAs | RunAsError): Promise<HostCheck> {
  const bwrap = probe.which('bwrap');
  if (!bwrap) {
    return { name: 'bubblewrap', ok: false, detail: 'bwrap is not in PATH', fix: fixes.install(['bubblewrap']) };
  }
  // As the user actions will run as: a root daemon runs bubblewrap unprivileged.
  const user = runAs instanceof RunAsError ? undefined : runAs.user;
  const [version, trial] = await Promise.all([
    probe.run(bwrap, ['--version'], BWRAP_TIMEOUT_MS),
    probe.run(bwrap, ['--unshare-all', '--ro-bind', '/', '/', '/bin/true'], BWRAP_TIMEOUT_MS, user),
  ]);
  const name = firstLine(version.stdout) || 'bwrap';
  const as = user ? ` as ${user.name}` : '';
  if (trial.exitCode === 0) {
    return { name: 'bubblewrap', ok: true, detail: `${name} at ${bwrap}: a sandbox with every namespace unshared ran /bin/true${as} in ${trial.durationMs} ms` };
  }
  const why = trial.timedOut
    ? `did not finish within ${BWRAP_TIMEOUT_MS / 1000} s`
    : trial.error ?? (firstLine(trial.stderr) || `exit code ${trial.exitCode}`);
  return {
    name: 'bubblewrap',
    ok: false,
    detail: `${name} at ${bwrap} cannot create a sandbox${as} (bwrap --unshare-all --ro-bind / / /bin/true): ${why}`,
    fix: userns.fix,
  };
}

interface BinfmtEntry {
  enabled: boolean;
  flags: string;
  interpreter?: string;
}

function parseBinfmtEntry(text: string): BinfmtEntry {
  const lines = text.split('\n').map((l) => l.trim());
  const flags = lines.find((l) => l.startsWith('flags:'))?.slice('flags:'.length).trim() ?? '';
  const interpreter = lines.find((l) => l.startsWith('interpreter '))?.slice('interpreter '.length).trim();
  return { enabled: lines[0] === 'enabled', flags, interpreter };
}

interface BinfmtState {
  check: HostCheck;
  usable: boolean;
  /** "not mounted", "disabled" or "enabled". */
  state: string;
}

function binfmtCheck(probe: HostProbe, fixes: Fixes): BinfmtState {
  const status = probe.readText(join(BINFMT_DIR, 'status'));
  if (status === undefined) {
    const detail = `not mounted at ${BINFMT_DIR}: actions for foreign ISAs cannot run`;
    return { check: { name: 'binfmt_misc', ok: false, detail, fix: fixes.mountBinfmt() }, usable: false, state: 'not mounted' };
  }
  if (status.trim() !== 'enabled') {
    const detail = `mounted at ${BINFMT_DIR} but disabled: actions for foreign ISAs cannot run`;
    return { check: { name: 'binfmt_misc', ok: false, detail, fix: fixes.write(join(BINFMT_DIR, 'status'), '1') }, usable: false, state: 'disabled' };
  }
  return { check: { name: 'binfmt_misc', ok: true, detail: `mounted and enabled at ${BINFMT_DIR}` }, usable: true, state: 'enabled' };
}

function qemuCheck(probe: HostProbe, fixes: Fixes, target: { qemu: string; isa: string }, binfmt: BinfmtState): HostCheck {
  const name = `qemu-${target.qemu}`;
  const interpreter = probe.which(`qemu-${target.qemu}-static`) ?? probe.which(`qemu-${target.qemu}`);
  const parts = [interpreter ? `interpreter ${interpreter}` : `no qemu-${target.qemu}-static or qemu-${target.qemu} in PATH`];
  const fix: string[] = [];
  if (!interpreter) fix.push(fixes.install(fixes.qemuPackages()));

  let registered = false;
  if (!binfmt.usable) {
    parts.push(`binfmt_misc ${binfmt.state}`);
    if (binfmt.check.fix) fix.push(binfmt.check.fix);
  } else {
    const path = join(BINFMT_DIR, name);
    const text = probe.readText(path);
    if (text === undefined) {
      parts.push(`no binfmt entry ${name}`);
      if (interpreter) {
        if (fixes.pm === 'apt-get' && !probe.which('update-binfmts')) fix.push(fixes.install(['binfmt-support']));
        fix.push(fixes.binfmtEnable(name));
      } else if (fixes.pm !== 'apt-get') {
        fix.push(fixes.binfmtEnable());
      }
    } else {
      const entry = parseBinfmtEntry(text);
      const flags = entry.flags || 'none';
      const where = entry.interpreter ? ` → ${entry.interpreter}` : '';
      if (!entry.enabled) {
        parts.push(`binfmt entry ${name} disabled (flags: ${flags})${where}`);
        if (entry.flags.includes('F')) fix.push(fixes.write(path, '1'));
        else fix.push(fixes.write(path, '-1'), fixes.binfmtEnable(name));
      } else if (!entry.flags.includes('F')) {
        // Without F the kernel opens the interpreter by path at exec time, which fails inside
        // a sandbox's new root: only the first process runs, its children get ENOEXEC.
        parts.push(`binfmt entry ${name} lacks the F (fix-binary) flag (flags: ${flags})${where}: emulation fails inside sandboxes`);
        fix.push(fixes.write(path, '-1'), fixes.binfmtEnable(name));
      } else {
        parts.push(`binfmt entry ${name} enabled (flags: ${flags})${where}`);
        registered = true;
      }
    }
  }
  const ok = Boolean(interpreter) && registered;
  return {
    name,
    ok,
    detail: `${target.isa}: ${parts.join('; ')}`,
    ...(ok || fix.length === 0 ? {} : { fix: [...new Set(fix)].join(' && ') }),
  };
}

/** Who actions run as: never root (see resolveRunAs). */
function runAsCheck(probe: HostProbe, runAs: RunAs | RunAsError): HostCheck {
  if (runAs instanceof RunAsError) return { name: 'run-as', ok: false, detail: runAs.message.replace(/; fix: .*$/, ''), fix: runAs.fix };
  if (runAs.fallback) {
    return { name: 'run-as', ok: true, detail: `actions run as ${runAs.description}, never root; a dedicated ${RUN_AS_USER} user would share no identity with other services: ${probe.isRoot ? '' : 'sudo '}reexec init --system (or ${CREATE_RUN_AS_USER})` };
  }
  return { name: 'run-as', ok: true, detail: `actions run as ${runAs.description}${runAs.user ? ', never root' : ''}` };
}

/**
 * Every host check, in a stable order: isa, kernel, run-as, user-namespaces, bubblewrap,
 * binfmt_misc, then one `qemu-<target>` per foreign ISA (aarch64, arm, ppc64le, s390x, riscv64
 * on x86-64).
 */
export async function runHostChecks(probe: HostProbe = systemProbe()): Promise<HostCheck[]> {
  const fixes = new Fixes(probe);
  const checks = [isaCheck(probe), kernelCheck(probe)];
  if (probe.platform !== 'linux') return checks;
  const runAs = probe.runAs();
  const userns = userNamespaceCheck(probe, fixes);
  checks.push(runAsCheck(probe, runAs), userns.check, await bubblewrapCheck(probe, fixes, userns, runAs));
  const binfmt = binfmtCheck(probe, fixes);
  checks.push(binfmt.check);
  for (const target of foreignQemuTargets(probe.arch)) checks.push(qemuCheck(probe, fixes, target, binfmt));
  return checks;
}
