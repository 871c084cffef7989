import { closeSync, mkdirSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';

export class DataDirLockedError extends Error {
  constructor(readonly dataDir: string, readonly pid: number) {
    super(
      `another reexec daemon (pid ${pid}) is already using the data dir ${dataDir}: stop it (kill ${pid}) or start this one with --data-dir pointing elsewhere`,
    );
    this.name = 'DataDirLockedError';
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * One daemon per data dir: a lock file holding the owner's pid, created exclusively. A lock
 * left by a process that no longer exists (a crash, SIGKILL) is taken over.
 */
export class DataDirLock {
  private constructor(private readonly path: string) {}

  static acquire(dataDir: string): DataDirLock {
    // Private to the daemon's user: the store holds every cached build, and staged inputs.
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    const path = join(dataDir, 'daemon.lock');
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        const fd = openSync(path, 'wx', 0o644);
        writeSync(fd, `${process.pid}\n`);
        closeSync(fd);
        return new DataDirLock(path);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        let pid = NaN;
        try {
          pid = Number.parseInt(readFileSync(path, 'utf8'), 10);
        } catch {
          /* vanished meanwhile: retry */
        }
        if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && alive(pid)) throw new DataDirLockedError(dataDir, pid);
        rmSync(path, { force: true });
      }
    }
    throw new Error(`could not lock the data dir ${dataDir}: ${path} keeps reappearing`);
  }

  release(): void {
    rmSync(this.path, { force: true });
  }
}
