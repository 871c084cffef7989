import { randomBytes } from 'node:crypto';
import type { Dirent } from 'node:fs';
import { chmod, lstat, mkdir, readdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { setImmediate as nextTurn } from 'node:timers/promises';
import type { Digest } from '../digest/digest.js';
import { StagingCacheLayout } from '../store/staging-cache-layout.js';

export interface StagingSweepOptions {
  /** Digest keys ("sha256:abc…") of inputs of queued and running actions: their entries stay. */
  isInUse: (key: string) => boolean;
  /** When a blob was last used (its CAS access time, seconds), 0 when unknown: the LRU order. */
  lastUsed: (digest: Digest) => number;
  /** Unfinished entries (name.tmp-…) older than this are a crash's leftovers. */
  staleTmpMs?: number;
}

export interface StagingSweepResult {
  entries: number;
  bytes: number;
  freedEntries: number;
  freedBytes: number;
  keptInUse: number;
}

interface Entry {
  path: string;
  key: string;
  lastUsed: number;
  inodes: number[];
}


/**
 * Bounds remote execution's staging cache (DATA/cache): read-only files, one per blob and mode,
 * and read-only materialisations of whole Directories, whose files are hard links to the
 * former. Its size is the bytes of its distinct inodes; an entry frees the inodes nothing else
 * in the cache links. Entries go least recently used first (by their digest's CAS access
 * time), never one an action queued or running needs. An entry is first renamed out of the way
 * (atomic), then deleted, so no action can ever bind-mount a half-deleted directory.
 */
export class StagingCacheSweeper {
  constructor(
    private readonly cacheDir: string,
    private readonly options: StagingSweepOptions,
  ) {}

  /** Measure the cache and, when it is over `maxBytes`, shrink it to `targetBytes`. */
  async sweep(limits: { maxBytes: number; targetBytes: number; dryRun?: boolean }): Promise<StagingSweepResult> {
    const inodes = new Map<number, { size: number; names: number }>();
    const entries: Entry[] = [];
    const result: StagingSweepResult = { entries: 0, bytes: 0, freedEntries: 0, freedBytes: 0, keptInUse: 0 };
    const staleTmp = Date.now() - (this.options.staleTmpMs ?? 3600_000);
    await this.removeTrash(limits.dryRun);

    const note = async (path: string, digest: Digest | undefined, isDir: boolean): Promise<void> => {
      // An entry that names no valid digest is no one's input: first to go.
      const entry: Entry = { path, key: digest?.key ?? '', lastUsed: digest ? this.options.lastUsed(digest) : 0, inodes: [] };
      const visit = async (p: string, st: { ino: number; size: number; isFile(): boolean }): Promise<void> => {
        if (!st.isFile()) return;
        const known = inodes.get(st.ino);
        if (known) known.names++;
        else inodes.set(st.ino, { size: st.size, names: 1 });
        entry.inodes.push(st.ino);
      };
      if (isDir) await walk(path, visit);
      else {
        const st = await lstat(path).catch(() => undefined);
        if (st) await visit(path, st);
      }
      entries.push(entry);
    };

    const layout = new StagingCacheLayout(this.cacheDir);
    const filesDir = layout.filesDir;
    for (const prefix of await names(filesDir)) {
      for (const name of await names(join(filesDir, prefix))) {
        const path = join(filesDir, prefix, name);
        if (StagingCacheLayout.isTmp(name)) {
          if (!limits.dryRun) await removeIfOlder(path, staleTmp);
          continue;
        }
        const entry = StagingCacheLayout.parseFileEntry(name);
        if (entry) await note(path, entry.digest, false);
      }
      await nextTurn();
    }
    const dirsDir = layout.dirsDir;
    for (const fn of await names(dirsDir)) {
      for (const name of await names(join(dirsDir, fn))) {
        const path = join(dirsDir, fn, name);
        if (StagingCacheLayout.isTmp(name)) {
          if (!limits.dryRun) await removeIfOlder(path, staleTmp);
          continue;
        }
        const entry = StagingCacheLayout.parseDirEntry(fn, name);
        if (entry) await note(path, entry.digest, true);
      }
    }

    for (const { size } of inodes.values()) result.bytes += size;
    result.entries = entries.length;
    if (result.bytes <= limits.maxBytes) return result;

    entries.sort((a, b) => a.lastUsed - b.lastUsed);
    let left = result.bytes;
    for (const e of entries) {
      if (left <= limits.targetBytes) break;
      if (this.options.isInUse(e.key)) {
        result.keptInUse++;
        continue;
      }
      if (!limits.dryRun && !(await this.remove(e))) {
        result.keptInUse++;
        continue;
      }
      let freed = 0;
      for (const ino of e.inodes) {
        const i = inodes.get(ino)!;
        if (--i.names === 0) freed += i.size;
      }
      left -= freed;
      result.freedEntries++;
      result.freedBytes += freed;
    }
    return result;
  }

  private trashDir(): string {
    return join(this.cacheDir, '.trash');
  }

  /** Rename the entry out of the way, then delete it; false when it turned out to be in use. */
  private async remove(e: Entry): Promise<boolean> {
    await mkdir(this.trashDir(), { recursive: true });
    const trash = join(this.trashDir(), randomBytes(8).toString('hex'));
    try {
      await rename(e.path, trash);
    } catch {
      return false; // gone already, or cannot be moved: leave it
    }
    // An action may have started to use it between the check and the rename: put it back.
    if (this.options.isInUse(e.key)) {
      await rename(trash, e.path).catch(() => undefined);
      return false;
    }
    await removeTree(trash);
    return true;
  }

  /** What an interrupted sweep left in the trash. */
  private async removeTrash(dryRun = false): Promise<void> {
    if (!dryRun) await removeTree(this.trashDir());
  }
}

async function names(dir: string): Promise<string[]> {
  return readdir(dir).catch(() => [] as string[]);
}

/** Every file under `dir` (not following symlinks). */
async function walk(dir: string, visit: (path: string, st: { ino: number; size: number; isFile(): boolean }) => Promise<void>): Promise<void> {
  let list: Dirent[];
  try {
    list = await readdir(dir, { withFileTypes: true });
  } catch {
    return;
  }
  for (const d of list) {
    const p = join(dir, d.name);
    if (d.isDirectory()) await walk(p, visit);
    else if (d.isFile()) {
      const st = await lstat(p).catch(() => undefined);
      if (st) await visit(p, st);
    }
  }
}

async function removeIfOlder(path: string, cutoffMs: number): Promise<void> {
  const st = await lstat(path).catch(() => undefined);
  if (st && st.mtimeMs < cutoffMs) await removeTree(path);
}

/** rm -rf, making read-only directories writable first when needed. */
async function removeTree(path: string): Promise<void> {
  try {
    await rm(path, { recursive: true, force: true });
  } catch {
    const fix = async (p: string): Promise<void> => {
      const st = await lstat(p).catch(() => undefined);
      if (!st?.isDirectory()) return;
      await chmod(p, 0o755).catch(() => undefined);
      for (const n of await names(p)) await fix(join(p, n));
    };
    await fix(path);
    await rm(path, { recursive: true, force: true });
  }
}
