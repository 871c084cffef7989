import { spawnSync } from 'node:child_process';
import { lookupUser, processUid, type UserEntry } from './users.js';

/** The dedicated account `reexec init --system` creates for actions of a daemon run as root. */
export const RUN_AS_USER = 'reexec';
/** The fallback when there is no dedicated account. */
export const FALLBACK_RUN_AS = 'nobody';

/** The command that creates the dedicated account (what `reexec init --system` runs: ensureSystemUser). */
export const CREATE_RUN_AS_USER = `useradd --system --user-group --home-dir /var/lib/reexec --no-create-home --shell /usr/sbin/nologin ${RUN_AS_USER}`;

/** Who actions run as: the daemon's own user, or (daemon run as root) an unprivileged one. */
export interface RunAs {
  /** Switch to this user for every action: set only when the daemon runs as root. */
  user?: UserEntry;
  /** In words, for logs and `reexec init`. */
  description: string;
  /** `nobody` stands in for the missing dedicated user (other services may run as it too). */
  fallback?: boolean;
}

export class RunAsError extends Error {
  constructor(
    message: string,
    /** The command or setting that fixes it. */
    readonly fix: string,
  ) {
    super(`${message}; fix: ${fix}`);
    this.name = 'RunAsError';
  }
}

/**
 * Resolve `execution.run-as` ("auto", a user name, or a uid). A daemon that is not root runs
 * actions as itself whatever the setting (it cannot switch users; the setting is then only
 * noted). As root: "auto" is the dedicated `reexec` user if it exists, else `nobody`; root
 * itself is refused, and so is a user that does not exist.
 */
export function resolveRunAs(setting: string, daemonUid = processUid()): RunAs & { note?: string } {
  if (daemonUid !== 0) {
    const self = lookupUser(daemonUid);
    const me = self ? `${self.name} (uid ${daemonUid})` : `uid ${daemonUid}`;
    const note = setting !== 'auto' && setting !== self?.name && setting !== String(daemonUid) ? `execution.run-as (${setting}) applies only to a daemon run as root; actions run as ${me}, the daemon's own user` : undefined;
    return { description: `the daemon's own user, ${me}`, ...(note ? { note } : {}) };
  }
  const candidates = setting === 'auto' ? [RUN_AS_USER, FALLBACK_RUN_AS] : [setting];
  for (const c of candidates) {
    const user = lookupUser(c);
    if (!user) continue;
    if (user.uid === 0) {
      throw new RunAsError(`execution.run-as is ${setting}, which is root: actions must never run as root`, `set execution.run-as to an unprivileged user (default: ${RUN_AS_USER}, created by \`reexec init --system\`)`);
    }
    return { user, description: `${user.name} (uid ${user.uid}, gid ${user.gid})`, ...(setting === 'auto' && user.name === FALLBACK_RUN_AS ? { fallback: true } : {}) };
  }
  if (setting === 'auto') throw new RunAsError(`reexec runs as root and there is neither a ${RUN_AS_USER} nor a ${FALLBACK_RUN_AS} user to run actions as`, `${CREATE_RUN_AS_USER} (or \`reexec init --system\`)`);
  throw new RunAsError(`execution.run-as names ${setting}, but there is no such user on this host`, `create it, or set execution.run-as to an existing unprivileged user (default: auto, ${RUN_AS_USER} or ${FALLBACK_RUN_AS})`);
}

/** resolveRunAs("auto"), with a RunAsError returned instead of thrown. */
export function lookupRunAsOrError(setting = 'auto', daemonUid = processUid()): (RunAs & { note?: string }) | RunAsError {
  try {
    return resolveRunAs(setting, daemonUid);
  } catch (err) {
    if (err instanceof RunAsError) return err;
    throw err;
  }
}

/**
 * Whether `user` can use what actions need: bubblewrap run by an unprivileged user (which needs
 * unprivileged user namespaces), with each of `dirs` reachable as a bind-mount source, and the
 * host-tools root (execution.host-tools.root) readable as the sandbox's `/`. Undefined when it
 * can, else what fails and the fix.
 */
export function checkRunAs(user: UserEntry, bwrap: string, dirs: readonly string[], hostToolsRoot = '/'): RunAsError | undefined {
  const as = { uid: user.uid, gid: user.gid, cwd: '/', encoding: 'utf8' as const, timeout: 10_000 };
  for (const dir of dirs) {
    const r = spawnSync('test', ['-x', dir], as);
    if (r.status !== 0) {
      return new RunAsError(
        `actions run as ${user.name}, which cannot reach ${dir} (a directory above it is closed to other users, as /root is)`,
        `put the data dir where ${user.name} can reach it: \`reexec start --data-dir /var/lib/reexec\` or data-dir in the config (root's default is /var/lib/reexec)`,
      );
    }
  }
  if (spawnSync('test', ['-r', hostToolsRoot, '-a', '-x', hostToolsRoot], as).status !== 0) {
    return new RunAsError(
      `actions run as ${user.name}, which cannot read execution.host-tools.root (${hostToolsRoot}): host-tools actions would find no file system`,
      `let other users read it (chmod o+rx on it and o+x on the directories above it), or point execution.host-tools.root at a root they can read`,
    );
  }
  // The host-tools sandbox's shape: the root read-only, a tmpfs on /tmp (which every root has) holding the binds.
  const binds = dirs.flatMap((d, i) => ['--ro-bind', d, `/tmp/${i}`]);
  const r = spawnSync(bwrap, ['--unshare-all', '--ro-bind', hostToolsRoot, '/', '--tmpfs', '/tmp', ...binds, '/bin/sh', '-c', ':'], as);
  if (r.status === 0) return undefined;
  const why = (r.stderr || r.error?.message || `exit code ${r.status}`).trim().split('\n')[0];
  return new RunAsError(
    `bubblewrap cannot create a sandbox as ${user.name} (${why})`,
    'allow unprivileged user namespaces (`reexec init` prints the sysctl for this host), or set execution.run-as to a user that may create them',
  );
}
