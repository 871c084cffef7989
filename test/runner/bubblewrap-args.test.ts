import { describe, expect, it } from 'vitest';
import { bubblewrapArgs, HOST_TOOLS_ROOT } from '../../src/runner/bubblewrap-runner.js';
import type { SandboxRoot } from '../../src/runner/runner.js';
import { parsePlatform } from '../../src/scheduler/platform.js';
import { sandboxPolicy } from '../../src/execution/build-executor.js';

const staged = (over: Partial<SandboxRoot> = {}): SandboxRoot => ({
  dir: '/w/root',
  readOnly: true,
  mounts: [
    { kind: 'ro-bind', source: '/cache/usr', dest: '/usr' },
    { kind: 'bind', source: '/w/root/build', dest: '/build' },
  ],
  tmpWritable: false,
  ...over,
});

const pairs = (a: string[], flag: string): string[][] => a.flatMap((x, i) => (x === flag ? [a.slice(i + 1, i + 3)] : []));

describe('bubblewrapArgs', () => {
  const base = { env: [], workingDirectory: 'build/x' };

  it('makes the input root "/" with the BuildStream sandbox contract', () => {
    const a = bubblewrapArgs({ ...base, root: staged(), argv: ['sh', '-c', 'true'], policy: sandboxPolicy(parsePlatform(undefined, 'x86-64')) }, 3);
    for (const f of ['--unshare-user', '--unshare-pid', '--unshare-ipc', '--unshare-uts', '--unshare-net', '--die-with-parent', '--disable-userns']) expect(a).toContain(f);
    expect(a.slice(a.indexOf('--cap-drop'), a.indexOf('--cap-drop') + 2)).toEqual(['--cap-drop', 'ALL']);
    expect(pairs(a, '--ro-bind')[0]).toEqual(['/w/root', '/']);
    // parents before children: root, then the read-only sysroot, then the writable build dir
    expect(a.indexOf('/cache/usr')).toBeGreaterThan(a.indexOf('/w/root'));
    expect(a.indexOf('/w/root/build')).toBeGreaterThan(a.indexOf('/cache/usr'));
    expect(a).toEqual(expect.arrayContaining(['--proc', '/proc', '--dev', '/dev']));
    expect(pairs(a, '--tmpfs')).toEqual(expect.arrayContaining([['/dev/shm', '--tmpfs'], ['/tmp', '--chdir']]));
    expect(a.slice(a.indexOf('--chdir'), a.indexOf('--chdir') + 2)).toEqual(['--chdir', '/build/x']);
    expect(a.slice(-4)).toEqual(['--', 'sh', '-c', 'true']);
    expect(pairs(a, '--uid')[0]![0]).toBe('0');
  });

  it('gives actions a session of their own; an interactive shell (reexec shell) keeps the terminal for job control', () => {
    const platform = parsePlatform(undefined, 'x86-64');
    const action = bubblewrapArgs({ ...base, root: staged(), argv: ['sh'], policy: sandboxPolicy(platform) }, 3);
    const shell = bubblewrapArgs({ ...base, root: staged(), argv: ['sh', '-i'], policy: sandboxPolicy(platform), interactive: true }, 3);
    expect(action).toContain('--new-session');
    expect(shell).not.toContain('--new-session');
    // Otherwise the very same sandbox.
    expect(shell.filter((x) => x !== '-i')).toEqual(action.filter((x) => x !== '--new-session'));
  });

  it('keeps the network with network=on and maps unixUID/unixGID', () => {
    const p = parsePlatform({ properties: [{ name: 'network', value: 'on' }, { name: 'unixUID', value: '1000' }, { name: 'unixGID', value: '50' }] });
    const a = bubblewrapArgs({ ...base, root: staged({ tmpWritable: true }), argv: ['true'], policy: sandboxPolicy(p) }, 3);
    expect(a).not.toContain('--unshare-net');
    expect(a.slice(a.indexOf('--uid'), a.indexOf('--uid') + 4)).toEqual(['--uid', '1000', '--gid', '50']);
    expect(pairs(a, '--tmpfs').map((x) => x[0])).not.toContain('/tmp');
  });

  it('host-tools: host filesystem read-only with its view on top (hidden, bound back), input root as working tree', () => {
    const p = parsePlatform({ properties: [{ name: 'reexec-sandbox', value: 'host-tools' }] });
    const hostMounts = [
      { kind: 'tmpfs', path: '/var/lib' },
      { kind: 'null', path: '/etc/shadow' },
      { kind: 'ro-bind', path: '/var/lib/dpkg' },
      { kind: 'tmpfs', path: '/data' },
    ] as const;
    const a = bubblewrapArgs({ ...base, root: staged({ mounts: [] }), argv: ['/usr/bin/gcc'], policy: sandboxPolicy(p), hostMounts: [...hostMounts] }, 3);
    expect(pairs(a, '--ro-bind')).toEqual([['/', '/'], ['/dev/null', '/etc/shadow'], ['/var/lib/dpkg', '/var/lib/dpkg']]);
    expect(pairs(a, '--tmpfs').map((x) => x[0])).toEqual(['/dev/shm', '/tmp', '/var/lib', '/data']);
    // In order: the tmpfs over /var/lib before what is bound back into it.
    expect(a.indexOf('/var/lib')).toBeLessThan(a.indexOf('/var/lib/dpkg'));
    expect(pairs(a, '--bind')[0]).toEqual(['/w/root', HOST_TOOLS_ROOT]);
    expect(a[a.indexOf('--chdir') + 1]).toBe(`${HOST_TOOLS_ROOT}/build/x`);
  });

  it('host-tools with a configured root: that root read-only as "/", what is bound back taken from inside it', () => {
    const p = parsePlatform({ properties: [{ name: 'reexec-sandbox', value: 'host-tools' }] });
    const hostMounts = [
      { kind: 'tmpfs', path: '/var/data' },
      { kind: 'null', path: '/srv/reexec.sock' },
      { kind: 'ro-bind', path: '/var/lib/dpkg' },
    ] as const;
    const a = bubblewrapArgs({ ...base, hostToolsRoot: '/srv/root/', hostMounts: [...hostMounts], root: staged({ mounts: [] }), argv: ['gcc'], policy: sandboxPolicy(p) }, 3);
    expect(pairs(a, '--ro-bind')).toEqual([['/srv/root', '/'], ['/dev/null', '/srv/reexec.sock'], ['/srv/root/var/lib/dpkg', '/var/lib/dpkg']]);
    expect(pairs(a, '--tmpfs').map((x) => x[0])).toEqual(['/dev/shm', '/tmp', '/var/data']);
  });

  it("binds an action's REAPI socket last, over everything else", () => {
    const a = bubblewrapArgs({ ...base, root: staged(), argv: ['true'], policy: sandboxPolicy(parsePlatform(undefined, 'x86-64')), binds: [{ source: '/tmp/reexec-api-x/1.sock', dest: '/tmp/reapi.sock' }] }, 3);
    const i = a.indexOf('/tmp/reexec-api-x/1.sock');
    expect(a.slice(i - 1, i + 2)).toEqual(['--bind', '/tmp/reexec-api-x/1.sock', '/tmp/reapi.sock']);
    expect(a.lastIndexOf('--tmpfs')).toBeLessThan(i);
  });
});
