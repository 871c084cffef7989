import * as sync from 'node:fs';
import * as fsp from 'node:fs/promises';

/**
 * The file system calls staging makes, in two flavours with the same promise interface. The
 * asynchronous one goes through libuv's thread pool: each call is a hop to a pool thread and
 * back, and waits behind whatever occupies the pool (fsyncs of blobs being stored). For a small
 * input root (Bazel's genrules: a few directories and a script) those hops cost more than the
 * calls: the synchronous flavour makes them on the daemon's thread, microseconds each.
 */
export interface FsOps {
  mkdir(path: string, options?: { recursive?: boolean }): Promise<unknown>;
  chmod(path: string, mode: number): Promise<void>;
  chown(path: string, uid: number, gid: number): Promise<void>;
  lchown(path: string, uid: number, gid: number): Promise<void>;
  copyFile(src: string, dest: string): Promise<void>;
  link(existing: string, path: string): Promise<void>;
  stat(path: string): Promise<sync.Stats>;
  utimes(path: string, atime: number, mtime: number): Promise<void>;
  symlink(target: string, path: string): Promise<void>;
  writeFile(path: string, data: Uint8Array): Promise<void>;
}

export const asyncFs: FsOps = fsp;

export const syncFs: FsOps = {
  mkdir: async (p, o) => sync.mkdirSync(p, o),
  chmod: async (p, m) => sync.chmodSync(p, m),
  chown: async (p, u, g) => sync.chownSync(p, u, g),
  lchown: async (p, u, g) => sync.lchownSync(p, u, g),
  copyFile: async (s, d) => sync.copyFileSync(s, d),
  link: async (e, p) => sync.linkSync(e, p),
  stat: async (p) => sync.statSync(p),
  utimes: async (p, a, m) => sync.utimesSync(p, a, m),
  symlink: async (t, p) => sync.symlinkSync(t, p),
  writeFile: async (p, d) => sync.writeFileSync(p, d),
};
