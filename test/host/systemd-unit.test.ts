import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ensureSystemUser } from '../../src/host/system-user.js';
import { defaultUnitPath, enableCommands, renderUnit, socketDirs, systemdRunning, systemdWord, type UnitOptions } from '../../src/host/systemd-unit.js';
import { REEXEC_BIN } from '../helpers/daemon-process.js';
import { parseUnitFile, splitCommandLine, unitValue } from '../helpers/unit-file.js';

const dirs: string[] = [];
const tempDir = (): string => {
  const d = mkdtempSync(join(tmpdir(), 'reexec-unit-'));
  dirs.push(d);
  return d;
};
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const userUnit: UnitOptions = { mode: 'user', node: process.execPath, bin: REEXEC_BIN, configPath: '/home/me/.config/reexec/config.yaml', dataDir: '/home/me/.local/share/reexec' };
const systemUnit: UnitOptions = { mode: 'system', node: process.execPath, bin: REEXEC_BIN, configPath: '/etc/reexec/config.yaml', dataDir: '/var/lib/reexec', user: 'reexec', socketDirs: ['/run/reexec'] };

/** Directives that would take from bubblewrap what it needs: user namespaces, a fully visible /proc. */
const BREAKS_BWRAP = ['PrivateUsers', 'RestrictNamespaces', 'ProtectKernelTunables', 'ProtectKernelLogs', 'ProtectControlGroups', 'ProtectProc', 'ProcSubset', 'SystemCallFilter'];

describe('the systemd unit', () => {
  it('user unit: starts the daemon with the config, logs to the journal, stops it gracefully, restarts it on failure', () => {
    const unit = parseUnitFile(renderUnit(userUnit));
    expect(unitValue(unit, 'Service', 'Type')).toBe('exec');
    expect(splitCommandLine(unitValue(unit, 'Service', 'ExecStart')!)).toEqual([process.execPath, REEXEC_BIN, 'start', '--config', userUnit.configPath, '--log-format', 'journal']);
    expect(unitValue(unit, 'Service', 'KillSignal')).toBe('SIGTERM');
    expect(unitValue(unit, 'Service', 'KillMode')).toBe('mixed');
    expect(Number(unitValue(unit, 'Service', 'TimeoutStopSec'))).toBeGreaterThan(10); // the daemon drains calls for up to 10 s
    expect(unitValue(unit, 'Service', 'Restart')).toBe('on-failure');
    expect(unitValue(unit, 'Service', 'StandardError')).toBe('journal');
    expect(unitValue(unit, 'Service', 'SyslogLevelPrefix')).toBe('yes');
    expect(unitValue(unit, 'Install', 'WantedBy')).toBe('default.target');
    // Nothing that needs (or implies) a private user namespace in a user manager.
    for (const key of [...BREAKS_BWRAP, 'ProtectSystem', 'ProtectHome', 'PrivateTmp', 'NoNewPrivileges', 'User']) expect(unit.get('Service')!.has(key), key).toBe(false);
  });

  it('system unit: a dedicated user, the host read-only but for the data dir and socket dir, bubblewrap intact', () => {
    const unit = parseUnitFile(renderUnit(systemUnit));
    expect(unitValue(unit, 'Service', 'User')).toBe('reexec');
    expect(unitValue(unit, 'Service', 'Group')).toBe('reexec');
    expect(unitValue(unit, 'Service', 'ProtectSystem')).toBe('strict');
    expect(unitValue(unit, 'Service', 'StateDirectory')).toBe('reexec');
    expect(unitValue(unit, 'Service', 'RuntimeDirectory')).toBe('reexec');
    expect(splitCommandLine(unitValue(unit, 'Service', 'ReadWritePaths')!)).toEqual(['/var/lib/reexec', '-/run/reexec']);
    expect(unitValue(unit, 'Service', 'NoNewPrivileges')).toBe('yes');
    expect(unitValue(unit, 'Install', 'WantedBy')).toBe('multi-user.target');
    expect(unitValue(unit, 'Unit', 'After')).toBe('network-online.target');
    for (const key of BREAKS_BWRAP) expect(unit.get('Service')!.has(key), key).toBe(false);
    // A setuid bwrap (no unprivileged user namespaces) would stop working under NoNewPrivileges=.
    expect(parseUnitFile(renderUnit({ ...systemUnit, bwrapSetuid: true })).get('Service')!.has('NoNewPrivileges')).toBe(false);
    // A data dir elsewhere: writable by path, no StateDirectory=.
    const elsewhere = parseUnitFile(renderUnit({ ...systemUnit, dataDir: '/srv/reexec', socketDirs: [] }));
    expect(unitValue(elsewhere, 'Service', 'ReadWritePaths')).toBe('/srv/reexec');
    expect(elsewhere.get('Service')!.has('StateDirectory')).toBe(false);
  });

  it('quotes paths as systemd reads them: spaces, quotes, % specifiers and $ variables', () => {
    const odd = '/tmp/a b/"q" 100%$HOME.yaml';
    expect(splitCommandLine(systemdWord(odd))).toEqual([odd]);
    expect(systemdWord('/plain/path.yaml')).toBe('/plain/path.yaml');
    const unit = parseUnitFile(renderUnit({ ...systemUnit, configPath: odd, dataDir: '/srv/re exec' }));
    expect(splitCommandLine(unitValue(unit, 'Service', 'ExecStart')!)[4]).toBe(odd);
    expect(splitCommandLine(unitValue(unit, 'Service', 'ReadWritePaths')!)[0]).toBe('/srv/re exec');
    expect(() => renderUnit({ ...userUnit, configPath: 'relative.yaml' })).toThrow(/absolute/);
  });

  it('knows where units go, what enables them and whether systemd runs', () => {
    expect(defaultUnitPath('user', { XDG_CONFIG_HOME: '/x/config' })).toBe('/x/config/systemd/user/reexec.service');
    expect(defaultUnitPath('system')).toBe('/etc/systemd/system/reexec.service');
    expect(enableCommands('user')).toContain('systemctl --user enable --now reexec');
    expect(enableCommands('system')).toContain('sudo systemctl enable --now reexec');
    expect(socketDirs(['127.0.0.1:1', 'unix:/run/reexec/r.sock', 'unix:///run/reexec/s.sock'])).toEqual(['/run/reexec']);
    const root = tempDir();
    expect(systemdRunning(root)).toBe(false);
    mkdirSync(join(root, 'run/systemd/system'), { recursive: true });
    expect(systemdRunning(root)).toBe(true);
  });

  const analyze = spawnSync('sh', ['-c', 'command -v systemd-analyze'], { encoding: 'utf8' }).stdout.trim();
  const verify = analyze || process.env.CI !== 'true' ? it.skipIf(!analyze) : it;
  verify(`passes systemd-analyze verify, user and system units alike${analyze ? '' : ' (skipped: install systemd)'}`, () => {
    if (!analyze) throw new Error('systemd-analyze is missing (package systemd): .ci/run installs it');
    for (const opts of [userUnit, systemUnit]) {
      const dir = tempDir();
      const file = join(dir, 'reexec.service');
      writeFileSync(file, renderUnit(opts));
      const r = spawnSync(analyze, ['verify', '--man=no', file], { encoding: 'utf8' });
      // Unknown keys and bad values are warnings on stderr: none allowed.
      expect({ status: r.status, stderr: r.stderr.trim() }, readFileSync(file, 'utf8')).toEqual({ status: 0, stderr: '' });
    }
  });
});

describe.skipIf(process.getuid?.() !== 0)('the system user', () => {
  it('is created once, as a system account with its own group and no login shell (on account files under a prefix)', async () => {
    const root = tempDir();
    mkdirSync(join(root, 'etc'));
    for (const f of ['passwd', 'group', 'shadow', 'gshadow', 'login.defs']) writeFileSync(join(root, 'etc', f), readFileSync(join('/etc', f)));
    const made = await ensureSystemUser('reexec-test', { home: '/var/lib/reexec', root });
    expect(made).toMatchObject({ name: 'reexec-test', home: '/var/lib/reexec', created: true });
    expect(made.uid).toBeLessThan(1000);
    const entry = readFileSync(join(root, 'etc/passwd'), 'utf8').split('\n').find((l) => l.startsWith('reexec-test:'))!;
    expect(entry.split(':')[6]).toBe('/usr/sbin/nologin');
    expect(readFileSync(join(root, 'etc/group'), 'utf8')).toMatch(new RegExp(`^reexec-test:x:${made.gid}:$`, 'm'));
    expect(await ensureSystemUser('reexec-test', { home: '/var/lib/reexec', root })).toMatchObject({ uid: made.uid, created: false });
    await expect(ensureSystemUser('Bad Name', { home: '/x', root })).rejects.toThrow(/not a valid user name/);
  });
});
