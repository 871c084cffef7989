import { randomFillSync } from 'node:crypto';
import { statfsSync, statSync } from 'node:fs';
import { open, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { formatBytes } from '../util/format-bytes.js';
import { silentLogger, type Logger } from '../util/logger.js';
import { Code, resourceExhausted, StatusError } from '../util/status-error.js';

/** Free and total bytes of a file system (statfs; what an unprivileged process may use). */
export interface FileSystemSpace {
  totalBytes: number;
  freeBytes: number;
}

/** The size and free space of the file system holding `dir` (statfs: a few microseconds). */
export function fileSystemSpace(dir: string): FileSystemSpace {
  const fs = statfsSync(dir);
  return { totalBytes: fs.blocks * fs.bsize, freeBytes: fs.bavail * fs.bsize };
}

/** The size and free space of the file system holding `dir`. */
export async function fileSystemBytes(dir: string): Promise<FileSystemSpace> {
  return fileSystemSpace(dir);
}

export interface DiskSpaceOptions {
  /** Size of the reserve file, and the headroom LMDB writes other than deletions never eat into. 0: neither. */
  reserveBytes: number;
  /**
   * How stale a measurement of free space may get before a check refreshes it. statfs costs a
   * few microseconds: the default (5 ms) makes nearly every write look at the disk first.
   */
  maxAgeMs?: number;
  /** statfs (tests inject a fake). */
  measure?: (dir: string) => FileSystemSpace;
  /** Where the setting comes from, for messages ("storage.disk-reserve in /etc/reexec.yaml"). */
  configHint?: string;
  log?: Logger;
}

/** The state of the data dir's file system, for status and metrics. */
export interface DiskSpaceSnapshot {
  totalBytes: number;
  freeBytes: number;
  reserveBytes: number;
  /** The reserve file is in place (false: released to let a collection commit, or not yet re-created). */
  reservePresent: boolean;
  /** Free space is below the headroom: only deletions write to the store. */
  critical: boolean;
}

/** The reserve file, in the data dir. */
export const RESERVE_FILE = 'disk-reserve';
const CHUNK = 1024 * 1024;

/**
 * What keeps LMDB from ever meeting a full file system. LMDB cannot delete without writing
 * (copy-on-write pages, the free list), and lmdb-js handles a failed commit badly (errors
 * escape as unhandled rejections; a failed page spill has crashed the process). So:
 *
 * - a headroom: LMDB writes other than deletions (blob records, action results, assets,
 *   operations) are refused with RESOURCE_EXHAUSTED while the file system has less free space
 *   than `reserveBytes`, and uploads stop well before (SizeLimitingBlobStore);
 * - a reserve: a file of `reserveBytes` (written, not sparse) in the data dir, deleted first
 *   when a deletion finds less free space than the headroom (another process filled the disk),
 *   so that the collection can commit and then remove blob files; re-created once there is
 *   room for it and the headroom again.
 *
 * Every ENOSPC, EDQUOT or EIO that still gets through becomes RESOURCE_EXHAUSTED naming the
 * data dir and the fix (diskError).
 */
export class DiskSpace {
  readonly reservePath: string;
  private space: FileSystemSpace = { totalBytes: 0, freeBytes: Infinity };
  private measuredAt = 0;
  private present: boolean;
  private restoring: Promise<boolean> | undefined;
  private readonly log: Logger;

  constructor(
    readonly dataDir: string,
    private readonly options: DiskSpaceOptions,
  ) {
    this.reservePath = join(dataDir, RESERVE_FILE);
    this.log = options.log ?? silentLogger;
    let size = -1;
    try {
      size = statSync(this.reservePath).size;
    } catch {
      /* absent */
    }
    this.present = size >= options.reserveBytes && options.reserveBytes > 0;
  }

  get reserveBytes(): number {
    return this.options.reserveBytes;
  }

  /** Free space below this stops every LMDB write but deletions. */
  get headroomBytes(): number {
    return this.options.reserveBytes;
  }

  get reservePresent(): boolean {
    return this.present;
  }

  /** Free bytes as last measured (Infinity before the first measurement). */
  get freeBytes(): number {
    return this.space.freeBytes;
  }

  /** Free space as of at most `maxAgeMs` ago. */
  measure(maxAgeMs = this.options.maxAgeMs ?? 5): FileSystemSpace {
    const now = performance.now();
    if (this.measuredAt > 0 && now - this.measuredAt <= maxAgeMs) return this.space;
    try {
      this.space = (this.options.measure ?? fileSystemSpace)(this.dataDir);
    } catch {
      /* keep the last measurement */
    }
    this.measuredAt = now;
    return this.space;
  }

  /** Free space is below the headroom: the store takes deletions only. */
  get critical(): boolean {
    return this.measure().freeBytes < this.headroomBytes;
  }

  snapshot(): DiskSpaceSnapshot {
    return { totalBytes: this.space.totalBytes, freeBytes: this.space.freeBytes, reserveBytes: this.reserveBytes, reservePresent: this.present, critical: this.critical };
  }

  /** Throws RESOURCE_EXHAUSTED when an LMDB write other than a deletion would eat into the headroom. */
  checkRoom(what: string): void {
    if (!this.critical) return;
    throw resourceExhausted(
      `${what}: the file system holding the data dir ${this.dataDir} is full (${formatBytes(Math.max(0, this.space.freeBytes))} free, less than the ${formatBytes(this.headroomBytes)} the store keeps for deletions). ` +
        `reexec is evicting least-recently-used blobs to make room and serves writes again by itself once it has; free space on that file system, or run \`reexec gc --target SIZE\``,
    );
  }

  /**
   * Before a deletion commits: if the file system has less free space than the headroom,
   * delete the reserve, so that LMDB has room to write the pages of the deletion.
   */
  async roomToDelete(): Promise<void> {
    const { freeBytes } = this.measure(0);
    if (freeBytes >= this.headroomBytes || !this.present) return;
    await this.restoring?.catch(() => undefined);
    if (!this.present) return;
    await rm(this.reservePath, { force: true });
    this.present = false;
    this.measuredAt = 0;
    this.log.warn(`the file system holding ${this.dataDir} is full (${formatBytes(Math.max(0, freeBytes))} free): released the ${formatBytes(this.reserveBytes)} disk reserve so that eviction can commit`);
  }

  /**
   * Re-create the reserve when the file system has room for it and the headroom after it.
   * Resolves to whether the reserve is in place. Never throws: a reserve that cannot be
   * written now is tried again later.
   */
  restoreReserve(): Promise<boolean> {
    if (this.present || this.reserveBytes <= 0) return Promise.resolve(this.present);
    this.restoring ??= this.writeReserve().finally(() => (this.restoring = undefined));
    return this.restoring;
  }

  private async writeReserve(): Promise<boolean> {
    const { freeBytes } = this.measure(0);
    if (freeBytes < this.reserveBytes + this.headroomBytes) return false;
    const tmp = `${this.reservePath}.tmp`;
    try {
      const fh = await open(tmp, 'w', 0o600);
      try {
        // Random bytes, not zeros: a compressing or deduplicating file system would not
        // allocate zeros, and the reserve must hold real blocks.
        const chunk = randomFillSync(Buffer.allocUnsafe(Math.min(CHUNK, this.reserveBytes)));
        for (let at = 0; at < this.reserveBytes; at += chunk.byteLength) {
          const n = Math.min(chunk.byteLength, this.reserveBytes - at);
          let done = 0;
          while (done < n) done += (await fh.write(chunk, done, n - done, at + done)).bytesWritten;
        }
        await fh.sync();
      } finally {
        await fh.close();
      }
      await rename(tmp, this.reservePath);
      this.present = true;
      this.measuredAt = 0;
      this.log.info(`disk reserve of ${formatBytes(this.reserveBytes)} in place (${this.reservePath})`);
      return true;
    } catch (err) {
      await rm(tmp, { force: true }).catch(() => undefined);
      this.measuredAt = 0;
      if (!isDiskFull(err)) this.log.warn(`could not write the disk reserve ${this.reservePath}: ${(err as Error).message}`);
      return false;
    }
  }
}

/** errno names and numbers (LMDB reports numbers) that mean "the disk cannot take this write". */
const DISK_ERRORS: Record<string, string> = { ENOSPC: 'no space left', EDQUOT: 'disk quota exceeded', EIO: 'I/O error', EFBIG: 'file too large' };
const DISK_ERRNOS: Record<number, string> = { 28: 'ENOSPC', 122: 'EDQUOT', 5: 'EIO', 27: 'EFBIG' };

/** The errno name of a disk error ("ENOSPC"), from Node's fs or from LMDB; undefined for others. */
export function diskErrorCode(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | undefined)?.code;
  if (typeof code === 'string' && code in DISK_ERRORS) return code;
  if (typeof code === 'number') return DISK_ERRNOS[code] ?? DISK_ERRNOS[-code];
  const message = err instanceof Error ? err.message : '';
  if (/no space left on device/i.test(message)) return 'ENOSPC';
  if (/quota exceeded/i.test(message)) return 'EDQUOT';
  return undefined;
}

export const isDiskFull = (err: unknown): boolean => diskErrorCode(err) !== undefined;

/**
 * An ENOSPC, EDQUOT, EIO or EFBIG as RESOURCE_EXHAUSTED, naming the data dir and what to do;
 * anything else unchanged.
 */
export function diskError(err: unknown, dataDir: string, what: string): unknown {
  if (err instanceof StatusError) return err;
  const code = diskErrorCode(err);
  if (!code) return err;
  const fix =
    code === 'EIO'
      ? 'check that file system and its device (dmesg), and free space on it'
      : code === 'EDQUOT'
        ? 'raise the quota of the user running reexec, or lower storage.max-bytes'
        : 'free space on that file system, lower storage.max-bytes, or run `reexec gc --target SIZE`';
  return new StatusError(
    Code.RESOURCE_EXHAUSTED,
    `${what}: the file system holding the data dir ${dataDir} refused the write (${code}: ${DISK_ERRORS[code]}); nothing was stored. ${fix[0]!.toUpperCase()}${fix.slice(1)}`,
    { cause: err },
  );
}

/**
 * Whether an unhandled rejection is lmdb-js's report of a failed commit: lmdb-js rejects a
 * promise of its own that no caller can reach (its batch start) besides the writers' own; the
 * writers were told (RESOURCE_EXHAUSTED), so this one is not a bug of ours.
 */
export function isLmdbCommitFailure(reason: unknown): boolean {
  return (reason instanceof Error && 'commitError' in reason) || (reason instanceof Error && typeof (reason as { code?: unknown }).code === 'number' && isDiskFull(reason));
}

/**
 * lmdb-js reports a failed commit as "Commit failed" and rejects a second promise,
 * `commitError`, with LMDB's error: unhandled, it would be an unhandled rejection. Returns the
 * error that says why (LMDB's, with its errno), having handled that promise.
 */
export async function lmdbCause(err: unknown): Promise<unknown> {
  const commitError = (err as { commitError?: unknown } | undefined)?.commitError;
  if (!(commitError instanceof Promise)) return err;
  // Rejected in the same turn as the writes' promises; bounded all the same.
  let timer: NodeJS.Timeout | undefined;
  const cause = await Promise.race([
    commitError.then(
      () => err,
      (e: unknown) => e,
    ),
    new Promise<unknown>((r) => (timer = setTimeout(() => r(err), 1000))),
  ]);
  clearTimeout(timer);
  return cause;
}
