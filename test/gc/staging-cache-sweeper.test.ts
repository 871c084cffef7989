import { chmodSync, existsSync, linkSync, mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Digest } from '../../src/digest/digest.js';
import { StagingCacheSweeper } from '../../src/gc/staging-cache-sweeper.js';
import { bytes } from '../helpers/storage.js';

/**
 * The staging cache as InputStager lays it out: cache/files/<xx>/<fn>-<hash>-<size><x|r>, and
 * cache/dirs/<fn>/<hash>-<size> trees whose files are hard links to cache files.
 */
describe('staging cache bound', () => {
  let cache: string;
  const lastUsed = new Map<string, number>();
  const inUse = new Set<string>();
  const sweeper = () => new StagingCacheSweeper(cache, { isInUse: (k) => inUse.has(k), lastUsed: (d) => lastUsed.get(d.key) ?? 0 });

  const cacheFile = (data: Buffer, t: number): { digest: Digest; path: string } => {
    const digest = Digest.compute(data);
    const dir = join(cache, 'files', digest.hash.slice(0, 2));
    mkdirSync(dir, { recursive: true });
    const path = join(dir, `sha256-${digest.hash}-${digest.sizeBytes}r`);
    writeFileSync(path, data);
    chmodSync(path, 0o444);
    lastUsed.set(digest.key, t);
    return { digest, path };
  };
  /** A cached Directory (named by some digest) whose files link `files`. */
  const cacheDir = (seed: number, files: string[], t: number): { digest: Digest; path: string } => {
    const digest = Digest.compute(bytes(10, 1000 + seed));
    const path = join(cache, 'dirs', 'sha256', `${digest.hash}-${digest.sizeBytes}`);
    mkdirSync(join(path, 'sub'), { recursive: true });
    files.forEach((f, i) => linkSync(f, join(path, 'sub', `f${i}`)));
    lastUsed.set(digest.key, t);
    return { digest, path };
  };

  beforeEach(() => {
    cache = mkdtempSync(join(tmpdir(), 'reexec-staging-'));
    lastUsed.clear();
    inUse.clear();
  });
  afterEach(() => rmSync(cache, { recursive: true, force: true }));

  it('measures distinct inodes and leaves a cache under its bound alone', async () => {
    const a = cacheFile(bytes(1000, 1), 10);
    cacheDir(1, [a.path], 20);
    const r = await sweeper().sweep({ maxBytes: 5000, targetBytes: 4000 });
    expect(r).toEqual({ entries: 2, bytes: 1000, freedEntries: 0, freedBytes: 0, keptInUse: 0 });
    expect(existsSync(a.path)).toBe(true);
  });

  it('removes least-recently-used entries first, never one in use; linked bytes count as freed only with their last name', async () => {
    const oldFile = cacheFile(bytes(1000, 1), 10);
    const heldFile = cacheFile(bytes(1000, 2), 11);
    const linked = cacheFile(bytes(1000, 3), 12);
    const dir = cacheDir(1, [linked.path], 13);
    const fresh = cacheFile(bytes(1000, 4), 100);
    inUse.add(heldFile.digest.key);
    const r = await sweeper().sweep({ maxBytes: 3500, targetBytes: 2000 });
    expect(r.bytes).toBe(4000);
    // oldFile frees 1000; heldFile is in use; `linked` frees nothing while `dir` links its inode;
    // `dir` then frees it: 2000 left.
    expect(existsSync(oldFile.path)).toBe(false);
    expect(existsSync(heldFile.path)).toBe(true);
    expect(existsSync(linked.path)).toBe(false);
    expect(existsSync(dir.path)).toBe(false);
    expect(existsSync(fresh.path)).toBe(true);
    expect(r.freedBytes).toBe(2000);
    expect(r.freedEntries).toBe(3);
    expect(r.keptInUse).toBe(1);
    expect(existsSync(join(cache, '.trash'))).toBe(true);
  });

  it('in a dry run, deletes nothing', async () => {
    const f = cacheFile(bytes(1000, 1), 10);
    const r = await sweeper().sweep({ maxBytes: 0, targetBytes: 0, dryRun: true });
    expect(r.freedEntries).toBe(1);
    expect(existsSync(f.path)).toBe(true);
  });

  it('removes unfinished entries a crash left, once they are old', async () => {
    const f = cacheFile(bytes(1000, 1), 10);
    const stale = `${f.path}.tmp-abcdef`;
    const young = `${f.path}.tmp-123456`;
    writeFileSync(stale, 'x');
    writeFileSync(young, 'x');
    utimesSync(stale, new Date(Date.now() - 2 * 3600_000), new Date(Date.now() - 2 * 3600_000));
    await sweeper().sweep({ maxBytes: 1e9, targetBytes: 1e9 });
    expect(existsSync(stale)).toBe(false);
    expect(existsSync(young)).toBe(true);
  });
});
