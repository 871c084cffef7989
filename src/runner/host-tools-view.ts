import { execFile } from 'node:child_process';
import { lstatSync, readdirSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';

/**
 * What the host-tools sandbox shows of the host. It binds the host-tools root read-only as `/`
 * (execution.host-tools.root: the host's own `/` by default, or a toolchain root), so that
 * Bazel and recc actions find compilers, headers, /usr, /etc/alternatives and locale data
 * where the client expects them; but the daemon's privileges must not turn into a way to read
 * private files (issue 18), so on top of that (every path here is a path inside the sandbox,
 * i.e. inside that root):
 * - empty writable tmpfs on /tmp, /var/tmp, /run and /dev/shm (other users' temporary files,
 *   the host's sockets; the runner makes /tmp, which holds the input root, and /dev/shm);
 * - hidden (an empty tmpfs for a directory, /dev/null for a file): HOST_TOOLS_HIDDEN, the
 *   daemon user's $HOME, and `execution.host-tools.hide`;
 * - shown again inside hidden directories: HOST_TOOLS_KEPT (the /var/lib entries tools read)
 *   and `execution.host-tools.expose`; an expose naming a hidden path itself un-hides it;
 * - hidden last, whatever expose says: the daemon's own secrets (its data dir, unix sockets,
 *   token file and TLS keys).
 */
export const HOST_TOOLS_HIDDEN: readonly string[] = [
  '/home',
  '/root',
  '/etc/shadow',
  '/etc/shadow-',
  '/etc/gshadow',
  '/etc/gshadow-',
  '/etc/ssh/*_key',
  '/etc/ssl/private',
  '/var/lib',
  '/var/backups',
  '/var/log',
  '/var/mail',
  '/var/spool',
  '/media',
];

/** Entries of hidden directories that tools read: package databases, catalogs, machine id. */
export const HOST_TOOLS_KEPT: readonly string[] = [
  '/var/lib/dpkg',
  '/var/lib/rpm',
  '/var/lib/pacman',
  '/var/lib/alternatives',
  '/var/lib/dbus',
  '/var/lib/ghc',
  '/var/lib/texmf',
  '/var/lib/xml-core',
  '/var/lib/sgml-base',
  '/var/lib/ca-certificates',
  '/var/lib/locales',
];

/** Empty and writable in the sandbox (/tmp always: the runner mounts it, the input root lives there). */
export const HOST_TOOLS_SCRATCH: readonly string[] = ['/tmp', '/var/tmp', '/run'];

/** Never hidden, whatever $HOME or the config says: the sandbox would have no tools left. */
const SYSTEM = new Set(['/', '/usr', '/bin', '/sbin', '/lib', '/lib32', '/lib64', '/libx32', '/etc', '/opt', '/var', '/proc', '/dev', '/sys', '/tmp', '/run']);

/** One mount on top of the host's read-only `/`: an empty tmpfs, /dev/null, or a path bound back. */
export interface HostMount {
  kind: 'tmpfs' | 'null' | 'ro-bind';
  path: string;
}

/** `p` is `dir` or below it. */
const under = (p: string, dir: string): boolean => p === dir || dir === '/' || p.startsWith(dir + '/');

/** "/etc/ssh/*_key" → the matching paths (looked for inside `root`); other paths as they are. */
function expand(pattern: string, root: string): string[] {
  const name = basename(pattern);
  if (!name.includes('*')) return [pattern];
  const re = new RegExp(`^${name.split('*').map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`);
  try {
    return readdirSync(join(root, dirname(pattern)))
      .filter((n) => re.test(n))
      .map((n) => join(dirname(pattern), n));
  } catch {
    return [];
  }
}

/** Whether a path is a directory (following symlinks), a file, or absent. */
export type PathKind = 'dir' | 'file' | undefined;

function kindOf(p: string): PathKind {
  try {
    lstatSync(p);
    return statSync(p).isDirectory() ? 'dir' : 'file';
  } catch {
    return undefined;
  }
}

export interface HostViewSettings {
  /** The host directory the sandbox sees as `/` (execution.host-tools.root); default `/`. */
  root?: string;
  /** Hidden besides HOST_TOOLS_HIDDEN (execution.host-tools.hide), inside the root. */
  hide: readonly string[];
  /** Shown although hidden (execution.host-tools.expose), inside the root. */
  expose: readonly string[];
  /**
   * The daemon's secrets, as host paths: hidden whatever expose says where they lie inside the
   * root (those outside it are not in the sandbox at all).
   */
  secrets: readonly string[];
  /** The daemon user's home directory, a host path (mapped into the root like the secrets). */
  home?: string;
}

/** `p`, a host path, as the sandbox sees it under `root`; undefined outside it (or the root itself). */
export function insideRoot(p: string, root: string): string | undefined {
  const r = root.replace(/(.)\/+$/, '$1');
  if (r === '/') return p;
  return p.startsWith(r + '/') ? p.slice(r.length) : undefined;
}

/**
 * The mounts for a settings, given which paths exist (kind) and which the user the sandbox runs
 * as can reach (a mount on or from a path it cannot reach makes bubblewrap fail, and it could
 * not read such a path anyway), both asked of paths inside the sandbox. Parents come before
 * children; a path inside a hidden directory is not hidden again unless something shows it.
 * /tmp is left to the runner.
 */
export function planHostView(s: HostViewSettings, kind: (p: string) => PathKind, reachable: (p: string) => boolean): HostMount[] {
  const root = s.root ?? '/';
  const norm = (list: readonly string[]): string[] => [...new Set(list.flatMap((p) => expand(resolve(p), root)))].sort();
  /** Host paths (the daemon's) as the sandbox sees them: those outside the root are not there. */
  const mapped = (list: readonly string[]): string[] => list.flatMap((p) => insideRoot(resolve(p), root) ?? []);
  const inside = (p: string, dirs: readonly string[]): boolean => dirs.some((d) => d !== p && under(p, d));
  /** Its kind if it exists and the sandbox's user can reach it (asked only then). */
  const present = (p: string): PathKind => {
    const k = kind(p);
    return k && reachable(p) ? k : undefined;
  };
  const expose = norm(s.expose);
  const wanted = norm([...HOST_TOOLS_HIDDEN, ...mapped(s.home ? [s.home] : []), ...s.hide]).filter((p) => !SYSTEM.has(p) && !expose.includes(p) && !inside(p, HOST_TOOLS_SCRATCH));

  const mounts: HostMount[] = [];
  const scratch = HOST_TOOLS_SCRATCH.map((path): HostMount => ({ kind: 'tmpfs', path }));
  /**
   * Whether the host's `p` shows through the mounts so far: the deepest mount over it decides
   * (the host's tree for a bind, nothing for a tmpfs or /dev/null; no mount: the host's `/`).
   */
  const visible = (p: string): boolean => {
    let deepest: HostMount | undefined;
    for (const m of [...scratch, ...mounts]) if (under(p, m.path) && (!deepest || m.path.length >= deepest.path.length)) deepest = m;
    return !deepest || deepest.kind === 'ro-bind';
  };
  /** Hide each path of `list` that still shows, in order (parents first). */
  const hide = (list: readonly string[]): void => {
    for (const p of list) {
      const k = visible(p) ? present(p) : undefined;
      if (k) mounts.push({ kind: k === 'dir' ? 'tmpfs' : 'null', path: p });
    }
  };
  for (const path of HOST_TOOLS_SCRATCH) if (path !== '/tmp' && kind(path) === 'dir') mounts.push({ kind: 'tmpfs', path });
  hide(wanted);
  // Bound back inside hidden directories: what tools need, and what the config exposes.
  for (const p of norm([...HOST_TOOLS_KEPT, ...expose])) if (!visible(p) && present(p)) mounts.push({ kind: 'ro-bind', path: p });
  // Hidden paths inside what was bound back, then the daemon's secrets, whatever expose says.
  hide(wanted);
  hide(norm(mapped(s.secrets)).filter((p) => !SYSTEM.has(p)));
  return mounts;
}

/**
 * How long one plan of the host view serves the actions that start after it. Planning looks at
 * a few dozen host paths with synchronous calls on the daemon's thread; a burst of small
 * actions (Bazel's genrules) shares one look. A path that appears on the host later is hidden
 * from the actions starting after this long.
 */
const PLAN_TTL_MS = 1000;

/** How long what a user can reach is remembered (permissions rarely change). */
const REACH_TTL_MS = 60_000;

/**
 * The host view of the host-tools sandbox for the daemon's settings, computed for each action
 * (paths come and go), with what the run-as user can reach checked as that user and remembered
 * for a minute. Paths are looked at inside the root (symlinks followed as the host sees them).
 */
export class HostToolsView {
  private readonly reach = new Map<string, { ok: boolean; at: number }>();
  /** The last plan: actions starting within PLAN_TTL_MS of it with the same secrets share it. */
  private plan?: { key: string; at: number; mounts: HostMount[] };

  constructor(
    private readonly settings: Omit<HostViewSettings, 'secrets'> & {
      /** The daemon's secrets now (some, like the REAPI sockets' directory, appear later). */
      secrets: () => readonly string[];
    },
    /** The user bubblewrap runs as, when not the daemon's own. */
    private readonly runAs?: { uid: number; gid: number },
  ) {}

  /** The host directory the sandbox sees as `/`. */
  get root(): string {
    return this.settings.root ?? '/';
  }

  /** The mounts for an action starting now. */
  async mounts(): Promise<HostMount[]> {
    const secrets = this.settings.secrets();
    const key = secrets.join('\0');
    const now = Date.now();
    if (this.plan && this.plan.key === key && now - this.plan.at < PLAN_TTL_MS) return this.plan.mounts;
    const mounts = await this.planNow(secrets);
    this.plan = { key, at: now, mounts };
    return mounts;
  }

  private async planNow(secrets: readonly string[]): Promise<HostMount[]> {
    const settings: HostViewSettings = { ...this.settings, secrets };
    const kind = (p: string): PathKind => kindOf(join(this.root, p));
    if (this.runAs) {
      const candidates = new Set<string>();
      planHostView(settings, kind, (p) => {
        candidates.add(p);
        return true;
      });
      await this.checkReach([...candidates]);
    }
    return planHostView(settings, kind, (p) => !this.runAs || this.reach.get(p)?.ok === true);
  }

  /** Ask, as the run-as user, which of `paths` (inside the root) it can reach (those not known from the last minute). */
  private async checkReach(paths: string[]): Promise<void> {
    const now = Date.now();
    const stale = paths.filter((p) => {
      const r = this.reach.get(p);
      return !r || now - r.at > REACH_TTL_MS;
    });
    if (stale.length === 0 || !this.runAs) return;
    const out = await new Promise<string>((res) =>
      execFile(
        '/bin/sh',
        ['-c', 'for p do if [ -e "$p" ]; then echo y; else echo n; fi; done', 'sh', ...stale.map((p) => join(this.root, p))],
        { uid: this.runAs!.uid, gid: this.runAs!.gid, cwd: '/', timeout: 10_000 },
        (_err, stdout) => res(String(stdout ?? '')),
      ),
    );
    const answers = out.split('\n');
    stale.forEach((p, i) => this.reach.set(p, { ok: answers[i] === 'y', at: now }));
  }
}
