// Debian's busybox-static for any architecture, fetched with apt-get under a private apt state
// (shared by the foreign-ISA tests and scripts/bench-isa.js; never used by the product, which
// downloads nothing). The host's apt configuration (its architectures and lists) is left
// exactly as it was: lists and archives go to CACHE/apt, the binary to CACHE/busybox/ARCH.
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';

/** Where test and benchmark downloads are kept between runs (never inside the repo). */
export const DOWNLOAD_CACHE = join(process.env['XDG_CACHE_HOME'] || join(homedir(), '.cache'), 'reexec-test');

/**
 * The static busybox of busybox-static:DEBARCH (e.g. arm64, armhf, ppc64el, s390x, i386,
 * amd64), downloaded once into `cacheDir`.
 * @param {string} debArch a Debian architecture name
 * @param {string} [cacheDir]
 * @returns {{ path?: string; why?: string }} the path of the binary, or why it cannot be had
 */
export function debianBusybox(debArch, cacheDir = DOWNLOAD_CACHE) {
  const dir = join(cacheDir, 'busybox', debArch);
  const bin = join(dir, 'bin', 'busybox');
  if (existsSync(bin)) return { path: bin };
  if (!existsSync('/usr/bin/apt-get')) return { why: 'apt-get is not available' };
  const state = join(cacheDir, 'apt');
  mkdirSync(join(state, 'lists', 'partial'), { recursive: true });
  mkdirSync(join(state, 'cache', 'archives', 'partial'), { recursive: true });
  const apt = ['-q', '-o', `Dir::State::Lists=${join(state, 'lists')}`, '-o', `Dir::Cache=${join(state, 'cache')}`, '-o', 'APT::Architectures::=' + debArch, '-o', 'APT::Sandbox::User=root'];
  // A foreign security index can be briefly out of sync on the mirror; the main archive is enough.
  spawnSync('apt-get', [...apt, 'update'], { stdio: 'ignore', timeout: 300_000 });
  const work = mkdtempSync(join(tmpdir(), 'reexec-deb-'));
  try {
    const r = spawnSync('apt-get', [...apt, 'download', `busybox-static:${debArch}`], { cwd: work, encoding: 'utf8', timeout: 300_000 });
    const deb = readdirSync(work).find((f) => f.endsWith('.deb'));
    if (!deb) return { why: `apt-get download busybox-static:${debArch} failed: ${(r.stderr || '').trim().split('\n').pop()}` };
    const x = join(work, 'x');
    execFileSync('dpkg-deb', ['-x', join(work, deb), x]);
    const found = ['bin/busybox', 'usr/bin/busybox'].map((p) => join(x, p)).find(existsSync);
    if (!found) return { why: `no busybox in busybox-static:${debArch}` };
    mkdirSync(join(dir, 'bin'), { recursive: true });
    copyFileSync(found, bin);
    chmodSync(bin, 0o755);
    return { path: bin };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
