import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { call, connect } from '../../src/client/reapi-client.js';
import { loadConfig } from '../../src/config/config.js';
import { REPO_ROOT, startDaemonProcess, type DaemonProcess } from '../helpers/daemon-process.js';
import { expectGrpcError } from '../helpers/storage.js';

const BIN = join(REPO_ROOT, 'bin', 'run.js');
const noOpenssl = spawnSync('openssl', ['version']).status !== 0;
const built = existsSync(join(REPO_ROOT, 'dist', 'host', 'tls-setup.js'));
const skip = noOpenssl ? 'install openssl' : !built ? 'dist/ is not built with --tls: run `npm run build` (`npm test` does it)' : '';

/**
 * `reexec init --tls` end to end: the files it makes, the config it writes, and a daemon
 * started with that config serving the client configuration it prints.
 */
describe.skipIf(!!skip)(`reexec init --tls${skip ? ` (skipped: ${skip})` : ''}`, () => {
  let home: string;
  let env: Record<string, string>;
  let daemon: DaemonProcess | undefined;
  const configPath = (): string => join(home, 'config', 'reexec', 'config.yaml');
  const tlsDir = (): string => join(home, 'config', 'reexec', 'tls');
  const init = (...args: string[]) => execa('node', [BIN, 'init', ...args], { env, extendEnv: false, reject: false, cwd: home });

  let port: number;

  beforeAll(async () => {
    // A free port, fixed in the config as `reexec init` wants it.
    const probe = createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    port = (probe.address() as AddressInfo).port;
    await new Promise((r) => probe.close(r));
    home = mkdtempSync(join(tmpdir(), 'reexec-init-tls-'));
    env = Object.fromEntries(Object.entries(process.env).filter(([k, v]) => v !== undefined && !k.startsWith('XDG_'))) as Record<string, string>;
    Object.assign(env, { HOME: home, XDG_CONFIG_HOME: join(home, 'config') });
  });
  afterAll(async () => {
    await daemon?.stop();
    rmSync(home, { recursive: true, force: true });
  });

  it('makes a CA, server and client certificates and tokens (private files), and a config that turns them on', async () => {
    const r = await init('--tls', '--listen', `127.0.0.1:${port}`, '--json');
    expect(r.exitCode, r.stderr).toBe(0);
    const json = JSON.parse(r.stdout) as { tls: { dir: string; created: string[]; serverNames: string[] }; clients: Record<string, string> };
    expect(json.tls.dir).toBe(tlsDir());
    expect(json.tls.serverNames).toEqual(expect.arrayContaining(['localhost', '127.0.0.1', '::1']));
    for (const f of ['ca.key', 'server.key', 'client.key', 'client.token', 'read-only.token', 'admin.token', 'tokens.yaml']) {
      expect(statSync(join(tlsDir(), f)).mode & 0o077, `${f} is private`).toBe(0);
    }
    expect(statSync(tlsDir()).mode & 0o777).toBe(0o700);
    // The server certificate is signed by the CA, for the loopback names, as a server.
    const verify = spawnSync('openssl', ['verify', '-CAfile', join(tlsDir(), 'ca.crt'), '-purpose', 'sslserver', join(tlsDir(), 'server.crt')], { encoding: 'utf8' });
    expect(verify.stdout + verify.stderr).toContain(': OK');
    const client = spawnSync('openssl', ['verify', '-CAfile', join(tlsDir(), 'ca.crt'), '-purpose', 'sslclient', join(tlsDir(), 'client.crt')], { encoding: 'utf8' });
    expect(client.stdout + client.stderr).toContain(': OK');

    const config = loadConfig(configPath());
    expect(config.tls).toEqual({ cert: join(tlsDir(), 'server.crt'), key: join(tlsDir(), 'server.key'), clientCa: join(tlsDir(), 'ca.crt') });
    expect(config.auth.tokenFile).toBe(join(tlsDir(), 'tokens.yaml'));
    // Client configuration that uses them.
    const bst2 = parseYaml(json.clients['buildstream2']!) as any;
    expect(bst2.artifacts.servers[0]).toMatchObject({ url: `https://127.0.0.1:${port}`, auth: { 'access-token': join(tlsDir(), 'client.token') } });
    expect(json.clients['bazel']).toContain(`build --remote_header=authorization=Bearer ${readFileSync(join(tlsDir(), 'client.token'), 'utf8').trim()}`);

    // Run again: nothing is remade, the config stays as it is.
    const again = await init('--tls', '--listen', `127.0.0.1:${port}`, '--json');
    expect(again.exitCode, again.stderr).toBe(0);
    expect((JSON.parse(again.stdout) as { tls: { created: string[] }; written: boolean }).tls.created).toEqual([]);
  });

  it('a daemon started with that config refuses plaintext and certificate-less clients and serves the printed setup', async () => {
    daemon = await startDaemonProcess({ listen: [`127.0.0.1:${port}`], args: ['--config', configPath()] });
    const ca = readFileSync(join(tlsDir(), 'ca.crt'));
    const cert = readFileSync(join(tlsDir(), 'client.crt'));
    const key = readFileSync(join(tlsDir(), 'client.key'));
    const token = (name: string): string => readFileSync(join(tlsDir(), `${name}.token`), 'utf8').trim();
    const endpoint = `grpcs://127.0.0.1:${daemon.port}`;
    const opened: Array<ReturnType<typeof connect>> = [];
    const client = (sec: Parameters<typeof connect>[2], at = endpoint) => {
      const c = connect(at, {}, sec);
      opened.push(c);
      return c;
    };
    try {
      await expectGrpcError(call(client({}, `grpc://127.0.0.1:${daemon.port}`).capabilities, 'GetCapabilities', {}), grpc.status.UNAVAILABLE);
      await expectGrpcError(call(client({ serverCa: ca, token: token('client') }).capabilities, 'GetCapabilities', {}), grpc.status.UNAVAILABLE);
      const rw: any = await call(client({ serverCa: ca, clientCert: cert, clientKey: key, token: token('client') }).capabilities, 'GetCapabilities', {});
      expect(rw.cacheCapabilities.actionCacheUpdateCapabilities.updateEnabled).toBe(true);
      const ro: any = await call(client({ serverCa: ca, clientCert: cert, clientKey: key, token: token('read-only') }).capabilities, 'GetCapabilities', {});
      expect(ro.cacheCapabilities.actionCacheUpdateCapabilities.updateEnabled).toBe(false);
      // `reexec status` with the same config finds the daemon, its CA, client certificate and admin token.
      const status = await execa('node', [BIN, 'status', '--config', configPath(), '--json'], { env, extendEnv: false, reject: false, cwd: home });
      expect(status.exitCode, status.stderr).toBe(0);
      expect(JSON.parse(status.stdout).dataDir).toBe(daemon.dataDir);
    } finally {
      for (const c of opened) c.close();
    }
  });
});
