import { accessSync, constants, readFileSync, statSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  buildStreamIsa,
  foreignQemuTargets,
  runHostChecks,
  systemProbe,
  type HostCheck,
  type HostProbe,
  type RunResult,
} from '../../src/host/host-checks.js';
import { RunAsError, type RunAs } from '../../src/host/run-as.js';

const byName = (checks: HostCheck[], name: string): HostCheck => {
  const c = checks.find((x) => x.name === name);
  if (!c) throw new Error(`no check named ${name} in ${checks.map((x) => x.name).join(', ')}`);
  return c;
};

const REGISTERED_PF = (arch: string): string =>
  `enabled\ninterpreter /usr/libexec/qemu-binfmt/${arch}-binfmt-P\nflags: PF\noffset 0\nmagic 7f454c46\nmask ffffffff\n`;

/** A described host: files, executables in PATH, and how bwrap behaves. */
function fakeHost(opts: {
  arch?: string;
  isRoot?: boolean;
  files?: Record<string, string>;
  bins?: string[];
  bwrap?: Partial<RunResult>;
  runAs?: RunAs | RunAsError;
}): HostProbe & { runs: string[][]; runsAs: Array<number | undefined> } {
  const files = opts.files ?? {};
  const bins = new Set(opts.bins ?? []);
  const runs: string[][] = [];
  const runsAs: Array<number | undefined> = [];
  const isRoot = opts.isRoot ?? false;
  return {
    runs,
    runsAs,
    runAs: () => opts.runAs ?? (isRoot ? { user: { name: 'reexec', uid: 999, gid: 998, home: '/nonexistent' }, description: 'reexec (uid 999, gid 998)' } : { description: "the daemon's own user, dev (uid 1000)" }),
    platform: 'linux',
    arch: opts.arch ?? 'x64',
    machine: 'x86_64',
    endianness: 'LE',
    release: '6.1.0-test',
    isRoot,
    readText: (p) => files[p],
    exists: (p) => p in files,
    which: (b) => (bins.has(b) ? `/usr/bin/${b}` : undefined),
    async run(file, args, _timeout, as) {
      runs.push([file, ...args]);
      runsAs.push(as?.uid);
      if (args[0] === '--version') return { exitCode: 0, stdout: 'bubblewrap 0.8.0\n', stderr: '', timedOut: false, durationMs: 1 };
      return { exitCode: 0, stdout: '', stderr: '', timedOut: false, durationMs: 7, ...opts.bwrap };
    },
  };
}

const HEALTHY_FILES = {
  '/proc/sys/user/max_user_namespaces': '63704\n',
  '/proc/sys/fs/binfmt_misc/status': 'enabled\n',
  ...Object.fromEntries(['aarch64', 'arm', 'ppc64le', 's390x', 'riscv64'].map((a) => [`/proc/sys/fs/binfmt_misc/qemu-${a}`, REGISTERED_PF(a)])),
};
const HEALTHY_BINS = ['apt-get', 'bwrap', 'update-binfmts', ...['aarch64', 'arm', 'ppc64le', 's390x', 'riscv64'].map((a) => `qemu-${a}-static`)];

describe('host checks on a described host', () => {
  it('maps node architectures to BuildStream ISA names', () => {
    expect(buildStreamIsa('x64')).toBe('x86-64');
    expect(buildStreamIsa('ia32')).toBe('x86-32');
    expect(buildStreamIsa('arm64')).toBe('aarch64');
    expect(buildStreamIsa('arm64', 'BE')).toBe('aarch64-be');
    expect(buildStreamIsa('arm')).toBe('aarch32');
    expect(buildStreamIsa('ppc64')).toBe('power-isa-le');
    expect(buildStreamIsa('ppc64', 'BE')).toBe('power-isa-be');
    expect(buildStreamIsa('riscv64')).toBe('rv64g');
    expect(buildStreamIsa('loong64')).toBe('la64v100');
    expect(buildStreamIsa('s390x')).toBeUndefined();
  });

  it('checks the foreign ISAs only: the five of the brief on x86-64, x86_64 instead of aarch64 on aarch64', () => {
    expect(foreignQemuTargets('x64').map((t) => t.qemu)).toEqual(['aarch64', 'arm', 'ppc64le', 's390x', 'riscv64']);
    expect(foreignQemuTargets('arm64').map((t) => t.qemu)).toEqual(['arm', 'ppc64le', 's390x', 'riscv64', 'x86_64']);
  });

  it('passes everything on a fully set-up host, in a stable order, with no fixes', async () => {
    const host = fakeHost({ files: HEALTHY_FILES, bins: HEALTHY_BINS });
    const checks = await runHostChecks(host);
    expect(checks.map((c) => c.name)).toEqual([
      'isa', 'kernel', 'run-as', 'user-namespaces', 'bubblewrap', 'binfmt_misc',
      'qemu-aarch64', 'qemu-arm', 'qemu-ppc64le', 'qemu-s390x', 'qemu-riscv64',
    ]);
    for (const c of checks) {
      expect(c, c.name).toMatchObject({ ok: true });
      expect(c.fix, c.name).toBeUndefined();
    }
    expect(byName(checks, 'isa').detail).toContain('x86-64');
    expect(byName(checks, 'qemu-aarch64').detail).toBe(
      'aarch64: interpreter /usr/bin/qemu-aarch64-static; binfmt entry qemu-aarch64 enabled (flags: PF) → /usr/libexec/qemu-binfmt/aarch64-binfmt-P',
    );
    // The sandbox is really tried, with the command of the brief.
    expect(host.runs).toContainEqual(['/usr/bin/bwrap', '--unshare-all', '--ro-bind', '/', '/', '/bin/true']);
  });

  it('accepts the non-static qemu-<arch> name too', async () => {
    const bins = HEALTHY_BINS.filter((b) => b !== 'qemu-arm-static').concat('qemu-arm');
    const c = byName(await runHostChecks(fakeHost({ files: HEALTHY_FILES, bins })), 'qemu-arm');
    expect(c.ok).toBe(true);
    expect(c.detail).toContain('interpreter /usr/bin/qemu-arm;');
  });

  it('bubblewrap missing: the install command, with sudo for a user and without for root', async () => {
    const bins = HEALTHY_BINS.filter((b) => b !== 'bwrap');
    const user = byName(await runHostChecks(fakeHost({ files: HEALTHY_FILES, bins })), 'bubblewrap');
    expect(user).toMatchObject({ ok: false, detail: 'bwrap is not in PATH', fix: 'sudo apt-get install -y bubblewrap' });
    const root = byName(await runHostChecks(fakeHost({ files: HEALTHY_FILES, bins, isRoot: true })), 'bubblewrap');
    expect(root.fix).toBe('apt-get install -y bubblewrap');
    const fedora = byName(await runHostChecks(fakeHost({ files: HEALTHY_FILES, bins: ['dnf'] })), 'bubblewrap');
    expect(fedora.fix).toBe('sudo dnf install -y bubblewrap');
  });

  it('bubblewrap failing because user namespaces are off: says why, fixes the namespaces', async () => {
    const files = { ...HEALTHY_FILES, '/proc/sys/kernel/unprivileged_userns_clone': '0\n' };
    const bwrap = { exitCode: 1, stderr: 'bwrap: No permissions to creating new namespace, likely because the kernel does not allow non-privileged user namespaces.\n' };
    const checks = await runHostChecks(fakeHost({ files, bins: HEALTHY_BINS, bwrap }));
    const userns = byName(checks, 'user-namespaces');
    expect(userns).toMatchObject({ ok: false, fix: 'sudo sysctl -w kernel.unprivileged_userns_clone=1' });
    expect(userns.detail).toContain('kernel.unprivileged_userns_clone=0');
    const bw = byName(checks, 'bubblewrap');
    expect(bw).toMatchObject({ ok: false, fix: 'sudo sysctl -w kernel.unprivileged_userns_clone=1' });
    expect(bw.detail).toContain('No permissions to creating new namespace');
  });

  it('user namespaces: max_user_namespaces=0 and AppArmor restrictions are reported with their sysctl', async () => {
    const off = await runHostChecks(fakeHost({ files: { ...HEALTHY_FILES, '/proc/sys/user/max_user_namespaces': '0\n' }, bins: HEALTHY_BINS, isRoot: true }));
    expect(byName(off, 'user-namespaces')).toMatchObject({ ok: false, fix: 'sysctl -w user.max_user_namespaces=15000' });
    const aa = await runHostChecks(fakeHost({ files: { ...HEALTHY_FILES, '/proc/sys/kernel/apparmor_restrict_unprivileged_userns': '1\n' }, bins: HEALTHY_BINS }));
    expect(byName(aa, 'user-namespaces')).toMatchObject({ ok: false, fix: 'sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0' });
    // Root may create user namespaces whatever the knob says, but its actions run unprivileged.
    const root = await runHostChecks(fakeHost({ files: { ...HEALTHY_FILES, '/proc/sys/kernel/unprivileged_userns_clone': '0\n' }, bins: HEALTHY_BINS, isRoot: true }));
    expect(byName(root, 'user-namespaces')).toMatchObject({ ok: false, fix: 'sysctl -w kernel.unprivileged_userns_clone=1' });
  });

  it('run-as: root runs actions, and the bubblewrap trial, as an unprivileged user; says when there is none', async () => {
    const root = fakeHost({ files: HEALTHY_FILES, bins: HEALTHY_BINS, isRoot: true });
    const checks = await runHostChecks(root);
    expect(byName(checks, 'run-as')).toMatchObject({ ok: true, detail: 'actions run as reexec (uid 999, gid 998), never root' });
    expect(root.runsAs[root.runs.findIndex((r) => r.includes('--unshare-all'))]).toBe(999);
    expect(byName(checks, 'bubblewrap').detail).toContain('/bin/true as reexec in');
    const nobody = { user: { name: 'nobody', uid: 65534, gid: 65534, home: '/nonexistent' }, description: 'nobody (uid 65534, gid 65534)', fallback: true };
    const fallback = byName(await runHostChecks(fakeHost({ files: HEALTHY_FILES, bins: HEALTHY_BINS, isRoot: true, runAs: nobody })), 'run-as');
    expect(fallback).toMatchObject({ ok: true, detail: expect.stringContaining('reexec init --system') });
    const none = byName(await runHostChecks(fakeHost({ files: HEALTHY_FILES, bins: HEALTHY_BINS, isRoot: true, runAs: new RunAsError('no user', 'useradd reexec') })), 'run-as');
    expect(none).toMatchObject({ ok: false, detail: 'no user', fix: 'useradd reexec' });
    const user = fakeHost({ files: HEALTHY_FILES, bins: HEALTHY_BINS });
    expect(byName(await runHostChecks(user), 'run-as').detail).toBe("actions run as the daemon's own user, dev (uid 1000)");
    expect(user.runsAs.every((u) => u === undefined)).toBe(true);
  });

  it('bubblewrap hanging: reported as a timeout', async () => {
    const checks = await runHostChecks(fakeHost({ files: HEALTHY_FILES, bins: HEALTHY_BINS, bwrap: { exitCode: undefined, timedOut: true } }));
    expect(byName(checks, 'bubblewrap')).toMatchObject({ ok: false, detail: expect.stringContaining('did not finish within 5 s') });
  });

  it('binfmt_misc not mounted: the mount command of the brief, on binfmt_misc and on every qemu entry', async () => {
    const files = { '/proc/sys/user/max_user_namespaces': '100\n' };
    const checks = await runHostChecks(fakeHost({ files, bins: HEALTHY_BINS }));
    const mount = 'sudo mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc && sudo update-binfmts --enable';
    expect(byName(checks, 'binfmt_misc')).toMatchObject({ ok: false, fix: mount });
    for (const arch of ['aarch64', 'arm', 'ppc64le', 's390x', 'riscv64']) {
      const c = byName(checks, `qemu-${arch}`);
      expect(c).toMatchObject({ ok: false, fix: mount });
      expect(c.detail).toContain(`interpreter /usr/bin/qemu-${arch}-static; binfmt_misc not mounted`);
    }
  });

  it('no QEMU at all: install it, then mount binfmt_misc', async () => {
    const checks = await runHostChecks(fakeHost({ files: { '/proc/sys/user/max_user_namespaces': '100\n' }, bins: ['apt-get', 'bwrap'] }));
    const c = byName(checks, 'qemu-riscv64');
    expect(c.ok).toBe(false);
    expect(c.detail).toBe('rv64g: no qemu-riscv64-static or qemu-riscv64 in PATH; binfmt_misc not mounted');
    expect(c.fix).toBe(
      'sudo apt-get install -y qemu-user-static binfmt-support && sudo mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc && sudo update-binfmts --enable',
    );
  });

  it('an entry without the F flag fails: emulation would break inside sandboxes', async () => {
    const files = { ...HEALTHY_FILES, '/proc/sys/fs/binfmt_misc/qemu-aarch64': 'enabled\ninterpreter /usr/bin/qemu-aarch64-static\nflags: OC\noffset 0\n' };
    const c = byName(await runHostChecks(fakeHost({ files, bins: HEALTHY_BINS })), 'qemu-aarch64');
    expect(c.ok).toBe(false);
    expect(c.detail).toContain('lacks the F (fix-binary) flag (flags: OC)');
    expect(c.fix).toBe('echo -1 | sudo tee /proc/sys/fs/binfmt_misc/qemu-aarch64 > /dev/null && sudo update-binfmts --enable qemu-aarch64');
  });

  it('a disabled entry, a missing entry, and a disabled binfmt_misc', async () => {
    const disabled = { ...HEALTHY_FILES, '/proc/sys/fs/binfmt_misc/qemu-s390x': REGISTERED_PF('s390x').replace('enabled', 'disabled') };
    const c1 = byName(await runHostChecks(fakeHost({ files: disabled, bins: HEALTHY_BINS, isRoot: true })), 'qemu-s390x');
    expect(c1).toMatchObject({ ok: false, fix: 'echo 1 > /proc/sys/fs/binfmt_misc/qemu-s390x' });
    expect(c1.detail).toContain('binfmt entry qemu-s390x disabled (flags: PF)');

    const missing: Record<string, string> = { ...HEALTHY_FILES };
    delete missing['/proc/sys/fs/binfmt_misc/qemu-ppc64le'];
    const c2 = byName(await runHostChecks(fakeHost({ files: missing, bins: HEALTHY_BINS })), 'qemu-ppc64le');
    expect(c2).toMatchObject({ ok: false, fix: 'sudo update-binfmts --enable qemu-ppc64le' });
    expect(c2.detail).toContain('no binfmt entry qemu-ppc64le');

    const off = { ...HEALTHY_FILES, '/proc/sys/fs/binfmt_misc/status': 'disabled\n' };
    const checks = await runHostChecks(fakeHost({ files: off, bins: HEALTHY_BINS }));
    expect(byName(checks, 'binfmt_misc')).toMatchObject({ ok: false, fix: 'echo 1 | sudo tee /proc/sys/fs/binfmt_misc/status > /dev/null' });
    expect(byName(checks, 'qemu-arm')).toMatchObject({ ok: false, fix: 'echo 1 | sudo tee /proc/sys/fs/binfmt_misc/status > /dev/null' });
  });

  it('a non-Linux host gets the ISA and kernel checks only', async () => {
    const host = { ...fakeHost({}), platform: 'darwin' };
    const checks = await runHostChecks(host);
    expect(checks.map((c) => c.name)).toEqual(['isa', 'kernel']);
    expect(byName(checks, 'kernel').ok).toBe(false);
  });
});

/** PATH lookup done independently of the module under test. */
function onPath(bin: string): string | undefined {
  for (const dir of (process.env['PATH'] ?? '').split(delimiter).filter(Boolean)) {
    const p = join(dir, bin);
    try {
      if (statSync(p).isFile()) {
        accessSync(p, constants.X_OK);
        return p;
      }
    } catch {
      /* next */
    }
  }
  return undefined;
}

const readOrUndefined = (p: string): string | undefined => {
  try {
    return readFileSync(p, 'utf8');
  } catch {
    return undefined;
  }
};

describe.runIf(process.platform === 'linux')('host checks on this machine', () => {
  it.skipIf(!onPath('bwrap'))('bubblewrap is installed and really sandboxes /bin/true', async () => {
    const checks = await runHostChecks(systemProbe());
    const bw = byName(checks, 'bubblewrap');
    expect(bw.ok, bw.detail).toBe(true);
    expect(bw.detail).toContain(onPath('bwrap')!);
    expect(bw.detail).toMatch(/ran \/bin\/true( as \S+)? in \d+ ms/);
    expect(byName(checks, 'user-namespaces').ok).toBe(true);
  });

  it('reports the qemu interpreters and binfmt_misc as they are', async () => {
    const checks = await runHostChecks(systemProbe());
    const status = readOrUndefined('/proc/sys/fs/binfmt_misc/status');
    const binfmtOk = status?.trim() === 'enabled';
    const binfmt = byName(checks, 'binfmt_misc');
    expect(binfmt.ok).toBe(binfmtOk);
    if (status === undefined) {
      expect(binfmt.detail).toContain('not mounted');
      expect(binfmt.fix).toMatch(/mount -t binfmt_misc binfmt_misc \/proc\/sys\/fs\/binfmt_misc && (sudo )?update-binfmts --enable$/);
    }
    for (const { qemu } of foreignQemuTargets(process.arch)) {
      const c = byName(checks, `qemu-${qemu}`);
      const interpreter = onPath(`qemu-${qemu}-static`) ?? onPath(`qemu-${qemu}`);
      const entry = binfmtOk ? readOrUndefined(`/proc/sys/fs/binfmt_misc/qemu-${qemu}`) : undefined;
      const registeredWithF = entry !== undefined && entry.startsWith('enabled') && /^flags: *\S*F/m.test(entry);
      expect(c.ok, c.detail).toBe(Boolean(interpreter) && registeredWithF);
      expect(c.detail).toContain(interpreter ? `interpreter ${interpreter}` : `no qemu-${qemu}-static or qemu-${qemu} in PATH`);
      if (!c.ok) expect(c.fix, c.name).toBeTruthy();
    }
  });

  it('names the ISA this machine runs', async () => {
    const isa = byName(await runHostChecks(systemProbe()), 'isa');
    const expected = buildStreamIsa(process.arch);
    expect(isa.ok).toBe(expected !== undefined);
    if (expected) expect(isa.detail.startsWith(expected)).toBe(true);
  });
});

