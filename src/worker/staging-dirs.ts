import { chmod, chown, lstat, mkdir, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * Open the way to the staging area for the user actions run as, when the daemon is root and
 * bubblewrap runs as that user: it must reach DATA/work (build directories) and DATA/cache
 * (the read-only directory cache) to bind-mount them. The data dir and those two become
 * root:<that user's group> with mode 0710 (traverse only); everything else in the data dir
 * (the LMDB store, blob files, logs) loses every group and other permission, so that group
 * can reach nothing but the staging area.
 */
export async function openStagingTo(dataDir: string, workDir: string, cacheDir: string, gid: number): Promise<void> {
  for (const dir of [workDir, cacheDir]) await mkdir(dir, { recursive: true });
  const staging = new Set([workDir, cacheDir]);
  for (const name of await readdir(dataDir)) {
    const path = join(dataDir, name);
    if (staging.has(path)) continue;
    const st = await lstat(path).catch(() => undefined);
    if (st && !st.isSymbolicLink() && (st.mode & 0o077) !== 0) await chmod(path, st.mode & 0o7700);
  }
  for (const dir of [dataDir, workDir, cacheDir]) {
    const st = await stat(dir);
    await chown(dir, st.uid, gid);
    await chmod(dir, 0o710);
  }
}
