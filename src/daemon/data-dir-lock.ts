import { closeSync, mkdirSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { isDiskFull, RESERVE_FILE } from '../store/disk-space.js';
import { ownStartTicks, sameProcess } from './process-identity.js';
import { UserError } from '../util/user-error.js';

/** Who holds a data dir: the daemon (`reexec start`) or an offline `reexec gc`. */
export type LockRole = 'daemon' | 'gc';

export class DataDirLockedError extends UserError {
  constructor(
    readonly dataDir: string,
    readonly pid: number,
    readonly role: LockRole = 'daemon',
  ) {
    super(
      role === 'gc'
        ? `\`reexec gc\` (pid ${pid}) is collecting garbage in the data dir ${dataDir}: wait for it to finish, or start this one with --data-dir pointing elsewhere`
        : `another reexec daemon (pid ${pid}) is already using the data dir ${dataDir}: stop it (reexec stop --data-dir ${dataDir}) or start this one with --data-dir pointing elsewhere`,
    );
    this.name = 'DataDirLockedError';
  }
}

/** What a lock file says: the holder's pid, and (since the lock names them) its start time and role. */
export interface LockHolder {
  pid: number;
  /** Clock ticks since boot at which the holder started (absent in locks of older versions). */
  startTicks?: number;
  role: LockRole;
}

export const lockPath = (dataDir: string): string => join(dataDir, 'daemon.lock');

/**
 * The lock file's content: the pid on the first line (what older versions wrote, and all they
 * read), then `start=TICKS` and `role=ROLE`.
 */
function parseLock(text: string): LockHolder | undefined {
  const [first, ...rest] = text.split('\n');
  const pid = Number.parseInt(first ?? '', 10);
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  const fields = Object.fromEntries(rest.filter((l) => l.includes('=')).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1).trim()]));
  const startTicks = fields['start'] !== undefined && /^\d+$/.test(fields['start']) ? Number(fields['start']) : undefined;
  return { pid, ...(startTicks !== undefined ? { startTicks } : {}), role: fields['role'] === 'gc' ? 'gc' : 'daemon' };
}

/**
 * The live process holding the data dir's lock, or undefined when there is none: no lock
 * file, or one left by a process that has exited, or whose pid now belongs to another
 * process (a crash, SIGKILL, then pid reuse).
 */
export function lockHolder(dataDir: string): LockHolder | undefined {
  let text: string;
  try {
    text = readFileSync(lockPath(dataDir), 'utf8');
  } catch (err) {
    // Unreadable is not absent: the data dir may belong to another user's daemon.
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR') return undefined;
    throw err;
  }
  const holder = parseLock(text);
  return holder && sameProcess(holder.pid, holder.startTicks) ? holder : undefined;
}

/**
 * Create the data dir if needed, private to the daemon's user: the store holds every cached
 * build, and staged inputs. Only the data dir itself: directories above it keep the usual
 * mode, so that the user a root daemon runs actions as can reach the staging area inside.
 */
export function makeDataDir(dataDir: string): void {
  mkdirSync(dirname(dataDir), { recursive: true });
  try {
    mkdirSync(dataDir, { mode: 0o700 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
}

/**
 * One process per data dir: a lock file naming the owner (pid, start time, role), created
 * exclusively. A lock left by a process that no longer exists (a crash, SIGKILL), or whose pid
 * was reused since, is taken over.
 */
export class DataDirLock {
  private constructor(private readonly path: string) {}

  static acquire(dataDir: string, role: LockRole = 'daemon'): DataDirLock {
    makeDataDir(dataDir);
    const path = lockPath(dataDir);
    const start = ownStartTicks();
    const content = `${process.pid}\n${start !== undefined ? `start=${start}\n` : ''}role=${role}\n`;
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        const fd = openSync(path, 'wx', 0o644);
        try {
          writeOwner(fd, dataDir, content);
        } catch (err) {
          closeSync(fd);
          rmSync(path, { force: true });
          throw err;
        }
        closeSync(fd);
        return new DataDirLock(path);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        let holder: LockHolder | undefined;
        try {
          holder = parseLock(readFileSync(path, 'utf8'));
        } catch {
          continue; // vanished meanwhile: retry
        }
        if (holder && holder.pid !== process.pid && sameProcess(holder.pid, holder.startTicks)) throw new DataDirLockedError(dataDir, holder.pid, holder.role);
        rmSync(path, { force: true });
      }
    }
    throw new Error(`could not lock the data dir ${dataDir}: ${path} keeps reappearing`);
  }

  release(): void {
    rmSync(this.path, { force: true });
  }
}

/**
 * Write our pid into the lock file. On a file system full to the last byte even those few
 * bytes fail: the lock is ours (created exclusively), so the data dir's disk reserve may go to
 * make room (it exists for that; whoever runs next re-creates it).
 */
function writeOwner(fd: number, dataDir: string, content: string): void {
  try {
    writeSync(fd, content);
  } catch (err) {
    if (!isDiskFull(err)) throw err;
    rmSync(join(dataDir, RESERVE_FILE), { force: true });
    writeSync(fd, content, 0);
  }
}
