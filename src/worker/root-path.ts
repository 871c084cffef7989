import { lstat, mkdir, readlink } from 'node:fs/promises';
import { posix } from 'node:path';

/**
 * Paths inside a sandbox, resolved on the host side without ever leaving the sandbox.
 *
 * An action controls every symlink in its writable tree, and inputs carry symlinks too (absolute
 * ones such as `lib -> /usr/lib`, or `x -> ../../../../etc`). Handing the host path of an output
 * to lstat/readFile/mkdir would resolve those links against the host's filesystem: an action
 * could then read any host file into the CAS, or make the server create directories anywhere.
 * So symlinks in the leading components are resolved here, one component at a time, the way the
 * kernel would inside the sandbox (chroot semantics): absolute targets start again at the
 * sandbox root and ".." stops at it.
 */
export interface RootView {
  /** Host path of a sandbox-relative path ("" = the root), looking through mounts. */
  hostPath(rel: string): string;
  /**
   * Absolute symlink targets start from this sandbox path ("/" for the rootfs sandbox). In the
   * host-tools sandbox the input root sits at a directory of the host's tree: absolute targets
   * elsewhere, and ".." above the root, point at host files and are refused.
   */
  mountPoint: string;
  /** Paths under which nothing may be created (read-only mounts shared with other actions). */
  readOnly?(rel: string): boolean;
}

/** Linux gives up after 40 symlinks in one lookup (ELOOP). */
const MAX_LINKS = 40;

export interface ResolveOptions {
  /** Resolve a symlink in the last component too (else it is returned as itself). */
  followLast?: boolean;
  /** Create missing directories along the way (never in read-only places). */
  create?: boolean;
  /** Called with the host path of each directory created. */
  created?: (hostPath: string) => Promise<void>;
}

/**
 * The sandbox-relative path `rel` refers to, with no symlink left in its leading components
 * (nor in the last with followLast), or undefined when it leaves the sandbox, loops, runs
 * through a missing entry or a non-directory, or (with create) needs a directory in a
 * read-only place. The last component itself need not exist.
 */
export async function resolveInRoot(view: RootView, rel: string, opts: ResolveOptions = {}): Promise<string | undefined> {
  const pending = rel.split('/').filter((c) => c !== '' && c !== '.');
  const resolved: string[] = [];
  let links = 0;
  const rootOnly = view.mountPoint === '/';
  while (pending.length > 0) {
    const c = pending.shift()!;
    if (c === '..') {
      if (resolved.length === 0) {
        if (!rootOnly) return undefined;
        continue; // "/.." is "/"
      }
      resolved.pop();
      continue;
    }
    resolved.push(c);
    const isLast = pending.length === 0;
    if (isLast && !opts.followLast) break;
    const here = resolved.join('/');
    let st;
    try {
      st = await lstat(view.hostPath(here));
    } catch {
      if (!opts.create) {
        if (isLast) break;
        return undefined;
      }
      if (view.readOnly?.(here)) return undefined;
      try {
        await mkdir(view.hostPath(here));
      } catch {
        return undefined;
      }
      await opts.created?.(view.hostPath(here));
      continue;
    }
    if (st.isSymbolicLink()) {
      if (++links > MAX_LINKS) return undefined;
      const target = await readlink(view.hostPath(here));
      resolved.pop();
      if (target.startsWith('/')) {
        let inside = target;
        if (!rootOnly) {
          const mp = view.mountPoint.replace(/\/+$/, '');
          if (target !== mp && !target.startsWith(mp + '/')) return undefined;
          inside = target.slice(mp.length);
        }
        resolved.length = 0;
        pending.unshift(...inside.split('/').filter((x) => x !== ''));
      } else {
        pending.unshift(...target.split('/').filter((x) => x !== ''));
      }
      continue;
    }
    if (!st.isDirectory() && !isLast) return undefined;
  }
  return posix.normalize(resolved.join('/') || '.').replace(/^\.$/, '');
}
