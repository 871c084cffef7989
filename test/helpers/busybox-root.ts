import { execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Where Debian's busybox-static installs its static busybox, if present. */
export const BUSYBOX = ['/bin/busybox', '/usr/bin/busybox'].find((p) => existsSync(p) && isStatic(p));

function isStatic(p: string): boolean {
  try {
    return /statically linked|static-pie/.test(execFileSync('file', ['-L', p], { encoding: 'utf8' }));
  } catch {
    // no `file` command: Debian's busybox-static is the one in /bin
    return true;
  }
}

/**
 * A tiny root filesystem: a static busybox with its applets as relative symlinks in
 * usr/bin, merged-/usr style links (/bin → usr/bin), and empty dev, proc, tmp.
 */
export function makeBusyboxRoot(extra: (root: string) => void = () => undefined): string {
  if (!BUSYBOX) throw new Error('busybox-static is not installed: apt-get install busybox-static');
  const root = mkdtempSync(join(tmpdir(), 'reexec-bbroot-'));
  // Readable by all, as a root file system is: a daemon run as root shows it (execution.host-tools.root) as its run-as user.
  chmodSync(root, 0o755);
  mkdirSync(join(root, 'usr', 'bin'), { recursive: true });
  copyFileSync(BUSYBOX, join(root, 'usr', 'bin', 'busybox'));
  chmodSync(join(root, 'usr', 'bin', 'busybox'), 0o755);
  const applets = execFileSync(BUSYBOX, ['--list'], { encoding: 'utf8' }).split('\n').filter(Boolean);
  for (const a of applets) if (a !== 'busybox') symlinkSync('busybox', join(root, 'usr', 'bin', a));
  symlinkSync('usr/bin', join(root, 'bin'));
  symlinkSync('usr/bin', join(root, 'sbin'));
  for (const d of ['dev', 'proc', 'tmp', 'work']) mkdirSync(join(root, d));
  extra(root);
  return root;
}

/**
 * Node properties in BuildStream's shape, for treeFromDirectory: a read-only root whose work,
 * tmp, dev and proc subtrees are writable.
 */
export function buildStreamReadOnlyRoot(rel: string): Array<{ name: string; value: string }> | undefined {
  if (rel === '') return [{ name: 'SubtreeReadOnly', value: 'true' }];
  return ['work', 'tmp', 'dev', 'proc'].includes(rel) ? [{ name: 'SubtreeReadOnly', value: 'false' }] : undefined;
}
