import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { debianBusybox, DOWNLOAD_CACHE } from '../../scripts/lib/foreign-busybox.js';
import { BUSYBOX } from './busybox-root.js';

/** Test downloads are kept here between runs (never inside the repo). */
export const TEST_CACHE: string = DOWNLOAD_CACHE;

/**
 * Debian's busybox-static for a foreign architecture, downloaded once with apt-get using a
 * private apt state directory, so the host's apt configuration (its architectures and lists)
 * is left exactly as it was. Returns the path of the static busybox, or undefined with why.
 * (scripts/bench-isa.js fetches its binaries the same way.)
 */
export function foreignBusybox(debArch: string): { path?: string; why?: string } {
  return debianBusybox(debArch, TEST_CACHE);
}

/** A static riscv64 executable from the npm registry (Debian 12 has no riscv64 port). */
export function riscvExecutable(): { path?: string; why?: string } {
  const dir = join(TEST_CACHE, 'riscv64');
  const bin = join(dir, 'package', 'bin', 'esbuild');
  if (existsSync(bin)) return { path: bin };
  mkdirSync(dir, { recursive: true });
  const r = spawnSync('npm', ['pack', '@esbuild/linux-riscv64@0.25', '--silent'], { cwd: dir, encoding: 'utf8', timeout: 300_000 });
  const tgz = readdirSync(dir).find((f) => f.endsWith('.tgz'));
  if (!tgz) return { why: `npm pack @esbuild/linux-riscv64 failed: ${(r.stderr || '').trim().split('\n').pop()}` };
  execFileSync('tar', ['-xzf', join(dir, tgz), '-C', dir]);
  return existsSync(bin) ? { path: bin } : { why: 'no bin/esbuild in @esbuild/linux-riscv64' };
}

/** A root like makeBusyboxRoot's, around a given (possibly foreign) static busybox. */
export function makeRootAround(busybox: string, extra: Record<string, string> = {}): string {
  const root = mkdtempSync(join(tmpdir(), 'reexec-froot-'));
  mkdirSync(join(root, 'usr', 'bin'), { recursive: true });
  copyFileSync(busybox, join(root, 'usr', 'bin', 'busybox'));
  chmodSync(join(root, 'usr', 'bin', 'busybox'), 0o755);
  // Applet names from the host's busybox (the same Debian version): the links need no emulation.
  const applets = BUSYBOX ? execFileSync(BUSYBOX, ['--list'], { encoding: 'utf8' }).split('\n').filter(Boolean) : ['sh', 'uname', 'echo', 'tr', 'wc'];
  for (const a of applets) if (a !== 'busybox') symlinkSync('busybox', join(root, 'usr', 'bin', a));
  symlinkSync('usr/bin', join(root, 'bin'));
  for (const d of ['dev', 'proc', 'tmp']) mkdirSync(join(root, d));
  for (const [name, src] of Object.entries(extra)) {
    copyFileSync(src, join(root, 'usr', 'bin', name));
    chmodSync(join(root, 'usr', 'bin', name), 0o755);
  }
  return root;
}
