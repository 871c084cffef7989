#!/usr/bin/env node
// Installs the Debian packages the test suite drives (real REAPI clients, sandboxing tools)
// when they are missing and we are root on a Debian system; otherwise says what is missing.
// Tests that need a missing tool skip with a message naming the package.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

// binary on PATH → Debian package that provides it (the same list .ci/run installs)
const NEEDED = {
  bwrap: 'bubblewrap',
  busybox: 'busybox-static',
  bst: 'buildstream',
  bazel: 'bazel-bootstrap',
  tmux: 'tmux',
  'qemu-aarch64-static': 'qemu-user-static',
  'update-binfmts': 'binfmt-support',
  // the Debian testing root with BuildStream 2 and buildbox (test/e2e/harness/clients-root.sh)
  debootstrap: 'debootstrap',
  // recc's compiles run in reexec's host-tools sandbox, with the host's gcc
  gcc: 'gcc',
  // `reexec init --tls` and the TLS tests make certificates with it
  openssl: 'openssl',
  // verifies the unit `reexec init --systemd` writes (systemd need not be running)
  'systemd-analyze': 'systemd',
  // the completion scripts of `reexec completion zsh|fish` are checked by the shells themselves
  zsh: 'zsh',
  fish: 'fish',
  // auth.local-users admits users to a unix socket through an ACL entry
  setfacl: 'acl',
  // the bots test runs a buildbox-worker in a network namespace of its own (veth pair)
  ip: 'iproute2',
};

const onPath = (bin) => spawnSync('sh', ['-c', `command -v ${bin}`], { stdio: 'ignore' }).status === 0;
// Debian's `busybox` package also provides a busybox, but a dynamic one: the BuildStream
// test copies it into a sysroot that has no libc, so it must be busybox-static's.
const dpkgInstalled = (pkg) =>
  spawnSync('dpkg-query', ['-W', '-f=${Status}', pkg], { encoding: 'utf8' }).stdout?.includes('install ok installed') ?? false;
const have = (bin) => (bin === 'busybox' && existsSync('/usr/bin/dpkg-query') ? dpkgInstalled('busybox-static') : onPath(bin));
const missing = Object.entries(NEEDED).filter(([bin]) => !have(bin)).map(([, pkg]) => pkg);
if (missing.length === 0 || process.env.REEXEC_SKIP_TEST_DEPS) process.exit(0);

const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
if (!isRoot || !existsSync('/usr/bin/apt-get')) {
  console.error(`reexec tests: missing ${missing.join(', ')}; the tests that need them will skip.`);
  console.error(`  install them with: sudo apt-get install -y ${missing.join(' ')}`);
  process.exit(0);
}
console.error(`reexec tests: installing ${missing.join(', ')} with apt-get`);
const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
try {
  execFileSync('apt-get', ['install', '-y', '-q', '--no-install-recommends', ...missing], { stdio: 'inherit', env });
} catch {
  execFileSync('apt-get', ['update', '-q'], { stdio: 'inherit', env });
  execFileSync('apt-get', ['install', '-y', '-q', '--no-install-recommends', ...missing], { stdio: 'inherit', env });
}
// Foreign-ISA tests need QEMU registered with binfmt_misc (what `reexec init --setup-binfmt` does).
if (missing.includes('qemu-user-static') || missing.includes('binfmt-support')) {
  if (!existsSync('/proc/sys/fs/binfmt_misc/status')) spawnSync('mount', ['-t', 'binfmt_misc', 'binfmt_misc', '/proc/sys/fs/binfmt_misc'], { stdio: 'inherit' });
  spawnSync('update-binfmts', ['--enable'], { stdio: 'inherit' });
}
