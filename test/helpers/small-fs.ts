import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, statfsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A small tmpfs of its own, to fill to the last byte. */
export interface SmallFs {
  /** Where it is mounted. */
  dir: string;
  /** Free bytes as an unprivileged writer sees them (statfs f_bavail). */
  free(): number;
  /**
   * Fill it to the last byte from another process (dd), as someone else's job would: resolves
   * once the file system is full; the files stay until drain().
   */
  fill(): Promise<void>;
  /** Remove what fill() wrote. */
  drain(): void;
  /** Unmount (lazily if something still holds it) and remove the mount point. */
  unmount(): void;
}

/** Why a small file system cannot be mounted here, or undefined when it can (root: mount -t tmpfs). */
export function smallFsUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'mounting a small tmpfs needs root';
  return undefined;
}

/** Mount a tmpfs of `mib` MiB under a fresh temporary directory. */
export function mountSmallFs(mib: number): SmallFs {
  const dir = mkdtempSync(join(tmpdir(), 'reexec-smallfs-'));
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${mib}m,mode=0755`, 'tmpfs', dir]);
  let fills = 0;
  const fillerDir = join(dir, 'someone-else');
  const run = (cmd: string, args: string[]): Promise<void> =>
    new Promise((resolve, reject) => {
      const p = spawn(cmd, args, { stdio: 'ignore' });
      p.once('error', reject);
      p.once('exit', () => resolve());
    });
  return {
    dir,
    free: () => {
      const s = statfsSync(dir);
      return s.bavail * s.bsize;
    },
    async fill() {
      execFileSync('mkdir', ['-p', fillerDir]);
      // Big blocks, then single pages for what is left: dd stops at ENOSPC either way.
      await run('dd', ['if=/dev/urandom', `of=${join(fillerDir, `big-${fills}`)}`, 'bs=1M']);
      await run('dd', ['if=/dev/urandom', `of=${join(fillerDir, `small-${fills}`)}`, 'bs=4k']);
      fills++;
    },
    drain() {
      for (const f of readdirSync(fillerDir, { withFileTypes: true })) rmSync(join(fillerDir, f.name), { force: true });
    },
    unmount() {
      try {
        execFileSync('umount', [dir]);
      } catch {
        execFileSync('umount', ['-l', dir]);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
