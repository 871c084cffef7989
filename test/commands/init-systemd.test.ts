import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import type { InitResult } from '../../src/commands/init.js';
import { compileConfig } from '../../src/config/config.js';
import { freePort, REEXEC_BIN } from '../helpers/daemon-process.js';
import { parseUnitFile, splitCommandLine, unitValue } from '../helpers/unit-file.js';

/** What this machine is: the command says which, and the tests check it says the right one. */
const systemdHere = existsSync('/run/systemd/system');

describe('reexec init --systemd', () => {
  let home: string;
  let env: Record<string, string>;

  beforeAll(() => {
    home = mkdtempSync(join(tmpdir(), 'reexec-systemd-home-'));
    chmodSync(home, 0o755);
    env = Object.fromEntries(Object.entries(process.env).filter(([k, v]) => v !== undefined && !k.startsWith('XDG_'))) as Record<string, string>;
    Object.assign(env, { HOME: home, XDG_CONFIG_HOME: join(home, 'config') });
  });
  afterAll(() => rmSync(home, { recursive: true, force: true }));

  const init = (...args: string[]) => execa(process.execPath, [REEXEC_BIN, 'init', ...args], { env, extendEnv: false, reject: false, cwd: home });

  it('writes a user unit that runs the daemon with the config, and says how to enable it, or that systemd is absent', async () => {
    const port = await freePort();
    const r = await init('--systemd', '--listen', `127.0.0.1:${port}`);
    expect(r.exitCode, r.stderr).toBe(0);
    const unitPath = join(home, 'config', 'systemd', 'user', 'reexec.service');
    const configPath = join(home, 'config', 'reexec', 'config.yaml');
    expect(r.stdout).toContain(`systemd user unit ${unitPath} written.`);
    if (systemdHere) {
      expect(r.stdout).toContain('Enable and start it, keep it running after you log out, and follow its log:');
    } else {
      expect(r.stdout).toContain('systemd is not running on this machine (no /run/systemd/system): the unit cannot be enabled here. On a machine that runs systemd:');
    }
    for (const c of ['systemctl --user daemon-reload', 'systemctl --user enable --now reexec', 'loginctl enable-linger "$USER"', 'journalctl --user -u reexec -f']) expect(r.stdout).toContain(`\n  ${c}`);
    expect(r.stdout).not.toContain('Start the server with:');

    const unit = parseUnitFile(readFileSync(unitPath, 'utf8'));
    const argv = splitCommandLine(unitValue(unit, 'Service', 'ExecStart')!);
    expect(argv).toEqual([process.execPath, REEXEC_BIN, 'start', '--config', configPath, '--log-format', 'journal']);

    // What systemd would run: it serves with the config, logs as journald wants, and stops
    // cleanly on the unit's KillSignal.
    const daemon = spawn(argv[0]!, argv.slice(1), { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    const exited = new Promise<number | null>((res) => daemon.once('exit', (code) => res(code)));
    const serving = await new Promise<boolean>((res) => {
      daemon.stderr.on('data', (c: Buffer) => {
        log += c.toString();
        if (log.includes(`serving on 127.0.0.1:${port}`)) res(true);
      });
      void exited.then(() => res(false));
    });
    expect(serving, log).toBe(true);
    daemon.kill(unitValue(unit, 'Service', 'KillSignal') as NodeJS.Signals);
    expect(await exited).toBe(0);
    const lines = log.trimEnd().split('\n');
    // A syslog priority per line, no timestamp of our own (journald stamps each line).
    expect(lines.every((l) => /^<[3467]>\S/.test(l)), log).toBe(true);
    expect(log).not.toMatch(/\d{4}-\d\d-\d\dT\d\d:\d\d/);
    expect(log).toMatch(new RegExp(`^<6>reexec \\S+ serving on 127\\.0\\.0\\.1:${port}`, 'm'));
    expect(log).toMatch(/^<6>stopped$/m);

    // Again: nothing to do, and --json says what there is.
    const again = await init('--systemd', '--listen', `127.0.0.1:${port}`, '--json');
    expect(again.exitCode, again.stderr).toBe(0);
    expect((JSON.parse(again.stdout) as InitResult).systemd).toEqual({
      mode: 'user',
      unitPath,
      outcome: 'unchanged',
      running: systemdHere,
      commands: ['systemctl --user daemon-reload', 'systemctl --user enable --now reexec', 'loginctl enable-linger "$USER"', 'journalctl --user -u reexec -f'],
    });
  });

  it('--system needs root, and says how to run it', async () => {
    const r = await execa('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, REEXEC_BIN, 'init', '--systemd', '--system', '--listen', '0.0.0.0:50051'], {
      env: { ...env, HOME: '/nonexistent' },
      extendEnv: false,
      reject: false,
    });
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain('Error: a system unit needs root: it writes /etc/systemd/system and creates a system user');
    expect(r.stderr).toContain('Run: sudo reexec init --systemd --system --listen 0.0.0.0:50051');
  });

  it.skipIf(process.getuid?.() !== 0)('--system as root: a unit for the service user, who owns a private data dir', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'reexec-systemd-system-'));
    try {
      const configPath = join(dir, 'etc', 'config.yaml');
      const dataDir = join(dir, 'lib', 'reexec');
      const unitPath = join(dir, 'units', 'reexec.service');
      // An account that exists already (nothing is created on this host).
      const r = await init('--systemd', '--system', '--service-user', 'nobody', '--config', configPath, '--data-dir', dataDir, '--unit-file', unitPath, '--listen', `unix:/run/reexec-test/r.sock`, '--json');
      expect(r.exitCode, r.stderr).toBe(0);
      const result = JSON.parse(r.stdout) as InitResult;
      expect(result.systemd).toMatchObject({ mode: 'system', unitPath, outcome: 'created', running: systemdHere, user: { name: 'nobody', uid: 65534, created: false } });
      expect(result.systemd!.commands).toEqual(['sudo systemctl daemon-reload', 'sudo systemctl enable --now reexec', 'journalctl -u reexec -f']);
      const st = statSync(dataDir);
      expect([st.uid, st.mode & 0o777]).toEqual([65534, 0o700]);
      const unit = parseUnitFile(readFileSync(unitPath, 'utf8'));
      expect(unitValue(unit, 'Service', 'User')).toBe('nobody');
      expect(splitCommandLine(unitValue(unit, 'Service', 'ExecStart')!).slice(2, 5)).toEqual(['start', '--config', configPath]);
      expect(splitCommandLine(unitValue(unit, 'Service', 'ReadWritePaths')!)).toEqual([dataDir, '-/run/reexec-test']);
      expect(unitValue(unit, 'Service', 'RuntimeDirectory')).toBe('reexec-test');
      expect(readFileSync(configPath, 'utf8')).toContain(`data-dir: "${dataDir}"`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it.skipIf(process.getuid?.() !== 0)('--system alone (as root): the dedicated user actions of a root daemon run as, the system paths, and no unit', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'reexec-system-'));
    try {
      const configPath = join(dir, 'etc', 'config.yaml');
      // An account that exists already (nothing is created on this host).
      const r = await init('--system', '--service-user', 'nobody', '--config', configPath, '--data-dir', join(dir, 'data'), '--json');
      expect(r.exitCode, r.stderr).toBe(0);
      const result = JSON.parse(r.stdout) as InitResult;
      expect(result.system).toEqual({ user: 'nobody', uid: 65534, created: false });
      expect(result.systemd).toBeUndefined();
      // The config names that user as the one actions run as (else a root daemon would pick reexec, or nobody).
      expect(readFileSync(configPath, 'utf8')).toMatch(/^execution:\n(?:#.*\n)*  run-as: "nobody"$/m);
      expect(compileConfig(parse(readFileSync(configPath, 'utf8'))).execution.runAs).toBe('nobody');
      const human = await init('--system', '--service-user', 'nobody', '--config', configPath, '--data-dir', join(dir, 'data'));
      expect(human.stdout).toContain('The system user nobody (uid 65534) exists: a daemon started as root runs actions as it.');
      const refused = await execa('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, REEXEC_BIN, 'init', '--system'], { env: { ...env, HOME: '/nonexistent' }, extendEnv: false, reject: false });
      expect(refused.stderr).toContain('Error: --system needs root: it creates the system user reexec');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
