import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { DataDirLock, lockHolder } from '../../src/daemon/data-dir-lock.js';
import { processAlive, systemdUnitIn } from '../../src/daemon/process-identity.js';
import { REEXEC_BIN, startDaemonProcess, type DaemonProcess } from '../helpers/daemon-process.js';

/** A process that is not reexec, to hand out its pid as if it had been reused. */
function bystander(): ChildProcess {
  return spawn('sleep', ['1000'], { stdio: 'ignore' });
}

describe('reexec stop', () => {
  let dir: string;
  let config: string;
  const leftovers: number[] = [];
  const daemons: DaemonProcess[] = [];
  const others: ChildProcess[] = [];

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'reexec-stop-'));
    config = join(dir, 'config.yaml');
    writeFileSync(config, 'metrics:\n  listen: off\nexecution:\n  enabled: false\n');
  });
  afterEach(() => {
    for (const p of others.splice(0)) p.kill('SIGKILL');
  });
  afterAll(async () => {
    for (const pid of leftovers) if (processAlive(pid)) process.kill(pid, 'SIGKILL');
    for (const d of daemons) await d.kill();
    rmSync(dir, { recursive: true, force: true });
  });

  const reexec = (...args: string[]) => execa(process.execPath, [REEXEC_BIN, ...args], { reject: false, env: { ...process.env, REEXEC_TEST_PAUSE_AT: '' } });
  const dataDir = (name: string): string => join(dir, name);

  it('stops a detached daemon by its data dir: a graceful drain, the pid file and lock gone; then exit 3, not running', async () => {
    const data = dataDir('detached');
    const started = await reexec('start', '--detach', '--config', config, '--data-dir', data, '--listen', '127.0.0.1:0');
    expect(started.exitCode, started.stderr).toBe(0);
    const pid = Number(readFileSync(join(data, 'daemon.pid'), 'utf8'));
    leftovers.push(pid);
    expect(started.stdout).toContain(`reexec running (pid ${pid})`);
    expect(started.stdout).toContain(`stop it with: reexec stop --config ${config} --data-dir ${data}`);
    expect(lockHolder(data)).toMatchObject({ pid, role: 'daemon' });

    const stopped = await reexec('stop', '--config', config, '--data-dir', data);
    expect(stopped.exitCode, stopped.stderr).toBe(0);
    expect(stopped.stdout).toContain(`Stopping reexec (pid ${pid}, data dir ${data})`);
    expect(stopped.stdout).toMatch(/^Stopped \(\d+(\.\d)? s\)\.$/m);
    expect(processAlive(pid)).toBe(false);
    expect(existsSync(join(data, 'daemon.pid'))).toBe(false);
    expect(existsSync(join(data, 'daemon.lock'))).toBe(false);
    // It shut down as SIGTERM asks: drained and closed the store.
    expect(readFileSync(join(data, 'daemon.log'), 'utf8')).toMatch(/"msg":"stopped"/);

    const again = await reexec('stop', '--config', config, '--data-dir', data, '--json');
    expect(again.exitCode).toBe(3);
    expect(JSON.parse(again.stdout)).toMatchObject({ wasRunning: false, dataDir: data, reason: `no reexec daemon holds the data dir ${data}` });
  });

  it('stops a daemon started in the foreground (no pid file) through the lock it holds; --json says how', async () => {
    const d = await startDaemonProcess({ dataDir: dataDir('foreground'), args: ['--config', config] });
    daemons.push(d);
    const r = await reexec('stop', '--config', config, '--data-dir', d.dataDir, '--json');
    expect(r.exitCode, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ wasRunning: true, pid: d.pid, dataDir: d.dataDir, how: 'drained' });
    expect(await d.exited).toEqual({ code: 0, signal: null });
  });

  it('--pid-file: stops the daemon it names, whatever the default data dir', async () => {
    const pidFile = join(dir, 'elsewhere', 'reexec.pid');
    mkdirSync(join(dir, 'elsewhere'));
    const data = dataDir('with-pid-file');
    const started = await reexec('start', '--detach', '--config', config, '--data-dir', data, '--listen', '127.0.0.1:0', '--pid-file', pidFile);
    expect(started.exitCode, started.stderr).toBe(0);
    const pid = Number(readFileSync(pidFile, 'utf8'));
    leftovers.push(pid);
    expect(started.stdout).toContain(`--pid-file ${pidFile}`);
    // A second daemon given the same pid file is refused: stop could not find the first any more.
    const second = await reexec('start', '--detach', '--config', config, '--data-dir', dataDir('second'), '--listen', '127.0.0.1:0', '--pid-file', pidFile);
    expect(second.exitCode).toBe(2);
    expect(second.stderr).toContain(`the pid file ${pidFile} belongs to a running reexec daemon (pid ${pid})`);

    const r = await reexec('stop', '--config', config, '--pid-file', pidFile);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(processAlive(pid)).toBe(false);
    expect(existsSync(pidFile)).toBe(false);
  });

  it('never signals a process that merely reuses a recorded pid: stale pid files and locks say "not running" (exit 3)', async () => {
    const other = bystander();
    others.push(other);
    const pid = other.pid!;

    // A pid file left by a crash, whose pid now belongs to another program: removed, nothing signalled.
    const pidFile = join(dir, 'stale.pid');
    writeFileSync(pidFile, `${pid}\n`);
    const r1 = await reexec('stop', '--config', config, '--pid-file', pidFile, '--json');
    expect(r1.exitCode).toBe(3);
    expect(JSON.parse(r1.stdout)).toMatchObject({ wasRunning: false, removedStalePidFile: pidFile });
    expect(existsSync(pidFile)).toBe(false);

    // A lock naming the pid with another start time (its holder died, the pid was reused).
    const data = dataDir('stale-lock');
    mkdirSync(data);
    writeFileSync(join(data, 'daemon.lock'), `${pid}\nstart=1\nrole=daemon\n`);
    const r2 = await reexec('stop', '--config', config, '--data-dir', data);
    expect(r2.exitCode).toBe(3);
    expect(r2.stderr).toContain('reexec is not running');

    // A lock of an older reexec (a pid only): what runs under that pid is not `reexec start`.
    writeFileSync(join(data, 'daemon.lock'), `${pid}\n`);
    const r3 = await reexec('stop', '--config', config, '--data-dir', data);
    expect(r3.exitCode).toBe(3);
    expect(processAlive(pid)).toBe(true);

    // And the daemon takes such a lock over instead of refusing to start.
    writeFileSync(join(data, 'daemon.lock'), `${pid}\nstart=1\nrole=daemon\n`);
    const lock = DataDirLock.acquire(data);
    expect(lockHolder(data)).toMatchObject({ pid: process.pid, role: 'daemon' });
    lock.release();

    // A dead pid in the default pid file: removed too.
    const dead = spawn('true');
    await new Promise((r) => dead.once('exit', r));
    writeFileSync(join(data, 'daemon.pid'), `${dead.pid}\n`);
    const r4 = await reexec('stop', '--config', config, '--data-dir', data, '--json');
    expect(r4.exitCode).toBe(3);
    expect(JSON.parse(r4.stdout)).toMatchObject({ removedStalePidFile: join(data, 'daemon.pid') });
  });

  it('past --timeout a daemon that does not finish draining gets SIGKILL, and the command says so', async () => {
    // The daemon stops at a pause point in its shutdown: it never finishes draining by itself.
    const d = await startDaemonProcess({ dataDir: dataDir('stuck'), args: ['--config', config], env: { REEXEC_TEST_PAUSE_AT: 'daemon-stop' } });
    daemons.push(d);
    const r = await reexec('stop', '--config', config, '--data-dir', d.dataDir, '--timeout', '1');
    expect(r.exitCode, r.stderr).toBe(0);
    expect(d.output()).toContain('"pausePoint":"daemon-stop"');
    expect(r.stdout).toContain('still running after 1 s: sending SIGKILL. The store is crash-safe; actions that were running run again after the next start.');
    expect(r.stdout).toContain('Killed (SIGKILL after 1 s).');
    expect(await d.exited).toEqual({ code: null, signal: 'SIGKILL' });

    // The store survives: a daemon starts on it again (taking over the dead daemon's lock).
    const next = await startDaemonProcess({ dataDir: d.dataDir, args: ['--config', config] });
    daemons.push(next);
    expect((await next.stop()).code).toBe(0);
  });

  it('--no-kill: past --timeout it gives up with exit 1 and leaves the daemon running', async () => {
    const d = await startDaemonProcess({ dataDir: dataDir('stuck-2'), args: ['--config', config], env: { REEXEC_TEST_PAUSE_AT: 'daemon-stop' } });
    daemons.push(d);
    const r = await reexec('stop', '--config', config, '--data-dir', d.dataDir, '--timeout', '1', '--no-kill', '--json');
    expect(r.exitCode).toBe(1);
    expect(JSON.parse(r.stdout)).toMatchObject({ wasRunning: true, pid: d.pid, error: { message: `pid ${d.pid} is still running 1 s after SIGTERM` } });
    expect(d.running()).toBe(true);
  });

  it.skipIf(process.getuid?.() !== 0)('as another user: cannot read the lock or signal the daemon, so exit 1 and say why', async () => {
    const shared = mkdtempSync(join(tmpdir(), 'reexec-stop-shared-'));
    chmodSync(shared, 0o755);
    try {
      const pidFile = join(shared, 'reexec.pid');
      const sharedConfig = join(shared, 'config.yaml');
      writeFileSync(sharedConfig, readFileSync(config));
      const d = await startDaemonProcess({ dataDir: dataDir('root-owned'), args: ['--config', config, '--pid-file', pidFile] });
      daemons.push(d);
      const asNobody = (...args: string[]) =>
        execa('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, REEXEC_BIN, 'stop', '--config', sharedConfig, ...args], { reject: false });
      const byDir = await asNobody('--data-dir', d.dataDir);
      expect(byDir.exitCode).toBe(1);
      expect(byDir.stderr).toContain(`Error: could not stop reexec: cannot read the lock of ${d.dataDir}`);
      const byPid = await asNobody('--pid-file', pidFile);
      expect(byPid.exitCode).toBe(1);
      expect(byPid.stderr).toContain(`Error: could not stop reexec: not allowed to signal pid ${d.pid}: it runs as another user`);
      expect(d.running()).toBe(true);
    } finally {
      rmSync(shared, { recursive: true, force: true });
    }
  });

  it('refuses a bad --timeout with exit 2', async () => {
    const r = await reexec('stop', '--config', config, '--data-dir', dataDir('none'), '--timeout', 'soon');
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain('--timeout: "soon" is not a duration');
  });
});

describe('which systemd service a daemon runs as (from its cgroup)', () => {
  it('names system and user services, and none for a terminal or a login session', () => {
    expect(systemdUnitIn('0::/system.slice/reexec.service\n')).toEqual({ name: 'reexec.service', user: false });
    expect(systemdUnitIn('0::/user.slice/user-1000.slice/user@1000.service/app.slice/reexec.service\n')).toEqual({ name: 'reexec.service', user: true });
    expect(systemdUnitIn('0::/user.slice/user-1000.slice/user@1000.service/app.slice/app-gnome-terminal-1234.scope\n')).toBeUndefined();
    expect(systemdUnitIn('0::/user.slice/user-1000.slice/session-3.scope\n')).toBeUndefined();
    expect(systemdUnitIn('12:pids:/system.slice/reexec.service\n0::/\n')).toEqual({ name: 'reexec.service', user: false });
  });
});
