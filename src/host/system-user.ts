import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';

/**
 * A system account for a service: no login shell, no password, its own group. What
 * `reexec init --systemd --system` runs the daemon as (SERVICE_USER, "reexec"); meant to be
 * reused by anything else that needs a dedicated account.
 */
export interface SystemUser {
  name: string;
  uid: number;
  gid: number;
  home: string;
  /** Made by this call (false: it existed). */
  created: boolean;
}

export class SystemUserError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SystemUserError';
  }
}

/** A passwd entry by name: from NSS (getent), or from ROOT/etc/passwd when `root` is given. */
async function lookup(name: string, root?: string): Promise<Omit<SystemUser, 'created'> | undefined> {
  let line: string | undefined;
  if (root) {
    try {
      line = readFileSync(join(root, 'etc/passwd'), 'utf8')
        .split('\n')
        .find((l) => l.startsWith(`${name}:`));
    } catch {
      return undefined;
    }
  } else {
    const r = await execa('getent', ['passwd', name], { reject: false });
    line = r.exitCode === 0 ? r.stdout.trim() : undefined;
  }
  if (!line) return undefined;
  const [, , uid, gid, , home] = line.split(':');
  return { name, uid: Number(uid), gid: Number(gid), home: home ?? '/' };
}

/**
 * The system user `name`, created (useradd --system, with a group of its name, home `home`
 * left for the caller to create, shell nologin) unless it exists. `root`: act on the account
 * files under that directory instead of the host's (useradd --prefix: images, tests).
 */
export async function ensureSystemUser(name: string, opts: { home: string; root?: string }): Promise<SystemUser> {
  if (!/^[a-z_][a-z0-9_-]{0,31}$/.test(name)) throw new SystemUserError(`"${name}" is not a valid user name (lower case letters, digits, _ and -)`);
  const existing = await lookup(name, opts.root);
  if (existing) return { ...existing, created: false };
  const args = ['--system', '--user-group', '--home-dir', opts.home, '--no-create-home', '--shell', '/usr/sbin/nologin', '--comment', 'reexec daemon', ...(opts.root ? ['--prefix', opts.root] : []), name];
  const r = await execa('useradd', args, { reject: false, all: true });
  if (r.exitCode !== 0) {
    const why = r.failed && r.exitCode === undefined ? `useradd could not run (${r.shortMessage})` : (r.all ?? '').trim() || `useradd exited with ${r.exitCode}`;
    throw new SystemUserError(`could not create the system user ${name}: ${why}`);
  }
  const made = await lookup(name, opts.root);
  if (!made) throw new SystemUserError(`useradd reported success, but there is no user ${name} afterwards`);
  return { ...made, created: true };
}
