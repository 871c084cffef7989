import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { StatusSnapshot } from '../../src/status/status-snapshot.js';
import { freePort, REEXEC_BIN as BIN, startDaemonProcess, type DaemonProcess } from '../helpers/daemon-process.js';

/** Without a terminal, and without CI's variable (which would force plain output anyway). */
const status = (args: string[], opts: { timeout?: number } = {}) =>
  execa(process.execPath, [BIN, 'status', ...args], { reject: false, timeout: opts.timeout ?? 30_000, env: { CI: '', XDG_CONFIG_HOME: join(tmpdir(), 'reexec-no-config') } });

describe('reexec status against a running daemon', () => {
  let d: DaemonProcess;
  let dir: string;
  let socket: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'reexec-status-cmd-'));
    socket = join(dir, 'reexec.sock');
    writeFileSync(join(dir, 'daemon.yaml'), 'metrics:\n  listen: off\n');
    d = await startDaemonProcess({ listen: ['127.0.0.1:0', `unix:${socket}`], args: ['--config', join(dir, 'daemon.yaml')] });
  });
  afterAll(async () => {
    await d?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('prints one plain snapshot when stdout is not a terminal', async () => {
    const r = await status(['--endpoint', `grpc://${d.address}`]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^reexec \d+\.\d+\.\d+ · up \S+ · serving 127\.0\.0\.1:\d+, unix:/);
    expect(r.stdout).toContain('Workers (0 running, 0 waiting)');
    expect(r.stdout).toContain('action cache');
    expect(r.stdout).toContain('metrics off');
    expect(r.stdout).not.toMatch(/\u001b\[/);
  });

  it('--json prints the snapshot', async () => {
    const r = await status(['--endpoint', d.address, '--json']);
    expect(r.exitCode, r.stderr).toBe(0);
    const snap = JSON.parse(r.stdout) as StatusSnapshot;
    expect(snap.listeners).toEqual(d.addresses);
    expect(snap.dataDir).toBe(d.dataDir);
    expect(snap.metrics.url).toBeNull();
    expect(snap.cache.ac.hitRate).toBeNull();
  });

  it('finds the daemon through the config, or a unix socket', async () => {
    const config = join(dir, 'client.yaml');
    writeFileSync(config, `listen: "0.0.0.0:${d.port}"\n`);
    const viaConfig = await status(['--config', config, '--json']);
    expect(viaConfig.exitCode, viaConfig.stderr).toBe(0);
    expect((JSON.parse(viaConfig.stdout) as StatusSnapshot).dataDir).toBe(d.dataDir);
    const viaSocket = await status(['--endpoint', `unix:${socket}`, '--json']);
    expect(viaSocket.exitCode, viaSocket.stderr).toBe(0);
    expect((JSON.parse(viaSocket.stdout) as StatusSnapshot).dataDir).toBe(d.dataDir);
  });

  it('--watch keeps printing snapshots (--json: one per line)', async () => {
    const child = execa(process.execPath, [BIN, 'status', '--endpoint', d.address, '--watch', '--json', '--interval', '0.2'], { reject: false, env: { CI: '' } });
    const lines: string[] = [];
    await new Promise<void>((resolve) => {
      child.stdout!.on('data', (c: Buffer) => {
        lines.push(...c.toString().split('\n').filter(Boolean));
        if (lines.length >= 3) resolve();
      });
    });
    child.kill('SIGINT');
    await child;
    const snaps = lines.slice(0, 3).map((l) => JSON.parse(l) as StatusSnapshot);
    expect(new Set(snaps.map((s) => s.takenAt)).size).toBe(3);

    const plain = execa(process.execPath, [BIN, 'status', '--endpoint', d.address, '--watch', '--interval', '0.2'], { reject: false, env: { CI: '' } });
    let out = '';
    await new Promise<void>((resolve) => {
      plain.stdout!.on('data', (c: Buffer) => {
        out += c.toString();
        if ((out.match(/^reexec /gm) ?? []).length >= 2) resolve();
      });
    });
    plain.kill('SIGINT');
    await plain;
    expect(out).toMatch(/^reexec .*\n[\s\S]*\n\nreexec /);
  });

  it('refuses a malformed endpoint or interval as a usage error', async () => {
    expect((await status(['--endpoint', 'no-port-here'])).exitCode).toBe(2);
    expect((await status(['--endpoint', d.address, '--interval', 'soon'])).exitCode).toBe(2);
  });
});

describe('reexec status against a daemon with access tokens', () => {
  let d: DaemonProcess;
  let dir: string;
  const ADMIN = 'admin-token-0123456789abcdef';
  const READER = 'reader-token-0123456789abcdef';

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'reexec-status-auth-'));
    writeFileSync(join(dir, 'tokens.yaml'), `${ADMIN}: all\n${READER}: read\n`);
    writeFileSync(join(dir, 'daemon.yaml'), `metrics:\n  listen: off\nauth:\n  token-file: ${join(dir, 'tokens.yaml')}\n  anonymous: []\n`);
    d = await startDaemonProcess({ args: ['--config', join(dir, 'daemon.yaml')] });
  });
  afterAll(async () => {
    await d?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const withToken = (token: string | undefined, args: string[]) =>
    execa(process.execPath, [BIN, 'status', ...args], { reject: false, env: { CI: '', REEXEC_TOKEN: token ?? '' } });

  it('needs a token with the admin right, and says so', async () => {
    const none = await withToken(undefined, ['--endpoint', d.address]);
    expect(none.exitCode, none.stderr).toBe(2);
    expect(none.stderr).toContain(`the reexec daemon at ${d.address} refused the status request`);
    expect(none.stderr).toContain('admin right');
    const reader = await withToken(READER, ['--endpoint', d.address, '--json']);
    expect(reader.exitCode, reader.stderr).toBe(2);
    expect(JSON.parse(reader.stdout)).toMatchObject({ error: { running: true } });
    const admin = await withToken(ADMIN, ['--endpoint', d.address, '--json']);
    expect(admin.exitCode, admin.stderr).toBe(0);
    expect((JSON.parse(admin.stdout) as StatusSnapshot).dataDir).toBe(d.dataDir);
  });

  it('takes the admin token from the token file of the config', async () => {
    const config = join(dir, 'client.yaml');
    writeFileSync(config, `listen: "${d.address}"\nauth:\n  token-file: ${join(dir, 'tokens.yaml')}\n`);
    const r = await withToken(undefined, ['--config', config, '--json']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as StatusSnapshot).listeners).toEqual(d.addresses);
  });
});

describe('reexec status without a daemon', () => {
  it('says no daemon answers, how to start one, and exits 3', async () => {
    const port = await freePort();
    const r = await status(['--endpoint', `127.0.0.1:${port}`]);
    expect(r.exitCode, r.stderr).toBe(3);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain(`no reexec daemon is answering at 127.0.0.1:${port} (connection refused)`);
    expect(r.stderr).toContain('reexec start');

    const json = await status(['--endpoint', `127.0.0.1:${port}`, '--json']);
    expect(json.exitCode, json.stderr + json.stdout).toBe(3);
    expect(JSON.parse(json.stdout)).toMatchObject({ error: { running: false, message: expect.stringContaining('no reexec daemon') } });

    const sock = await status(['--endpoint', 'unix:/nonexistent/reexec.sock']);
    expect(sock.exitCode, sock.stderr).toBe(3);
    expect(sock.stderr).toContain('(no such socket)');
  });

  it('with no config and no daemon names the default address', async () => {
    const home = mkdtempSync(join(tmpdir(), 'reexec-status-home-'));
    try {
      const r = await execa(process.execPath, [BIN, 'status'], { reject: false, env: { CI: '', XDG_CONFIG_HOME: home } });
      // Something may listen on the default port on a developer machine; then it is a daemon or not.
      if (r.exitCode === 3) {
        expect(r.stderr).toContain('127.0.0.1:50051');
        expect(r.stderr).toContain('--endpoint');
      }
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  });
});
