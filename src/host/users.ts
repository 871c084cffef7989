import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

/** One account of the host's user database. */
export interface UserEntry {
  name: string;
  uid: number;
  /** The primary group. */
  gid: number;
  home: string;
}

/** "name:x:uid:gid:gecos:home:shell" → a UserEntry. */
function parsePasswdLine(line: string): UserEntry | undefined {
  const f = line.split(':');
  if (f.length < 7) return undefined;
  const uid = Number(f[2]);
  const gid = Number(f[3]);
  if (!Number.isInteger(uid) || !Number.isInteger(gid)) return undefined;
  return { name: f[0]!, uid, gid, home: f[5]! };
}

/**
 * A user by name or numeric uid, as the system's name service knows it (`getent passwd`, so
 * LDAP and sssd accounts count), else from /etc/passwd. Undefined when there is no such user.
 */
export function lookupUser(nameOrUid: string | number): UserEntry | undefined {
  const key = String(nameOrUid);
  if (!/^[A-Za-z0-9._][A-Za-z0-9._-]*\$?$/.test(key)) return undefined;
  const r = spawnSync('getent', ['passwd', key], { encoding: 'utf8', timeout: 10_000 });
  if (r.status === 0) return parsePasswdLine(r.stdout.trim().split('\n')[0] ?? '');
  // 2: no such key; anything else (no getent): read the file.
  if (r.status === 2) return undefined;
  let text: string;
  try {
    text = readFileSync('/etc/passwd', 'utf8');
  } catch {
    return undefined;
  }
  const numeric = /^[0-9]+$/.test(key);
  for (const line of text.split('\n')) {
    const u = parsePasswdLine(line);
    if (u && (numeric ? u.uid === Number(key) : u.name === key)) return u;
  }
  return undefined;
}

/** "alice (uid 1001)", or "uid 1001" for a uid with no account. */
export function describeUid(uid: number): string {
  const u = lookupUser(uid);
  return u ? `${u.name} (uid ${uid})` : `uid ${uid}`;
}

/** The uid this process runs as (0: root). */
export const processUid = (): number => (typeof process.getuid === 'function' ? process.getuid() : -1);
