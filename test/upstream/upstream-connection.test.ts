import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { parse } from 'yaml';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import * as grpc from '@grpc/grpc-js';
import { compileConfig, DEFAULT_UPSTREAM, UPSTREAM_KEYS, type UpstreamConfig } from '../../src/config/config.js';
import { planInit } from '../../src/config/init-config.js';
import { UpstreamConnection, UpstreamError } from '../../src/upstream/upstream-connection.js';
import { createLogger } from '../../src/util/logger.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { waitFor } from '../helpers/wait.js';

const lines: string[] = [];
const log = createLogger({ write: (l: string) => lines.push(l), level: 'debug' });
const upstreamAt = (url: string, more: Partial<UpstreamConfig> = {}): UpstreamConfig => ({ ...DEFAULT_UPSTREAM, url, ...more });

describe('upstream config', () => {
  it('takes a bare URL or a mapping, and refuses what is not grpc(s)://HOST:PORT', () => {
    expect(compileConfig({ upstream: 'grpc://cache:8980' }).upstream?.url).toBe('grpc://cache:8980');
    const c = compileConfig({ upstream: { url: 'grpcs://cache:443', instance: 'main', 'call-timeout': '2s', queue: { 'max-items': 10 }, retry: { initial: 0.5, max: '5s' } } }).upstream!;
    expect(c).toMatchObject({ url: 'grpcs://cache:443', instance: 'main', callTimeoutSeconds: 2, push: true, queue: { maxItems: 10, concurrency: 4 }, retry: { initialSeconds: 0.5, maxSeconds: 5 } });
    expect(() => compileConfig({ upstream: { url: 'grpc://cache:1', retry: { initial: '10s', max: '1s' } } })).toThrow(/below "initial"/);
    expect(() => compileConfig({ upstream: 'http://cache:80' })).toThrow(/grpc:\/\/HOST:PORT/);
    expect(() => compileConfig({ upstream: { url: 'grpc://cache:1', colour: 'red' } })).toThrow(/no setting "colour"/);
    expect(() => compileConfig({ upstream: { url: 'grpc://cache:1', 'server-cert': '/x.pem' } })).toThrow(/use grpcs:\/\//);
    expect(() => compileConfig({ upstream: { url: 'grpcs://cache:1', 'client-cert': '/x.pem' } })).toThrow(/both client-cert and client-key/);
    expect(compileConfig({}).upstream).toBeNull();
  });

  it('documents every key in templates/config.yaml, and the commented block compiles', () => {
    const text = readFileSync(new URL('../../templates/config.yaml', import.meta.url), 'utf8');
    const block = text.slice(text.indexOf('# upstream:'), text.indexOf('# ── Used by remote execution'));
    const raw = parse(block.split('\n').map((l) => l.replace(/^# ?/, '')).join('\n')) as { upstream: Record<string, unknown> };
    expect(Object.keys(raw.upstream).sort()).toEqual([...UPSTREAM_KEYS].sort());
    expect(compileConfig(raw).upstream).toMatchObject({ ...DEFAULT_UPSTREAM, url: 'grpcs://cache.example.com:443', serverCert: '/etc/reexec/upstream-ca.crt', clientCert: expect.any(String), clientKey: expect.any(String), tokenFile: expect.any(String) });
  });
});

describe('reexec init --upstream', () => {
  it('writes the upstream url active and the rest of the section as comments, and compiles', () => {
    const plan = planInit({ configPath: '/tmp/x/config.yaml', dataDir: '/tmp/x/data', listen: ['127.0.0.1:50051'], upstream: 'grpcs://cluster.example:443' });
    expect(plan.content).toMatch(/^upstream:\n#.*\n {2}url: "grpcs:\/\/cluster\.example:443"$/m);
    expect(compileConfig(parse(plan.content)).upstream).toEqual({ ...DEFAULT_UPSTREAM, url: 'grpcs://cluster.example:443' });
    // The clients point at this reexec, not at the cluster.
    expect(plan.clients.bazel).toContain('grpc://127.0.0.1:50051');
    expect(plan.clients.bazel).not.toContain('cluster.example');
  });
});

describe('UpstreamConnection', () => {
  let up: TestDaemon | undefined;
  let conn: UpstreamConnection | undefined;
  afterEach(async () => {
    conn?.close();
    conn = undefined;
    await up?.stop();
    up = undefined;
  });

  it('checks and logs the capabilities of a reachable upstream, and is up', async () => {
    up = await startTestDaemon();
    conn = await UpstreamConnection.open(upstreamAt(`grpc://${up.address}`), { log });
    expect(conn.health().state).toBe('up');
    expect(conn.capabilities).toMatchObject({ acUpdateEnabled: true, execEnabled: true, maxBatchTotalSizeBytes: up.daemon.config.storage.maxBatchBytes });
    expect(conn.capabilities!.digestFunctions).toContain('sha256');
    expect(lines.join('\n')).toMatch(/upstream grpc:\/\/127\.0\.0\.1:\d+: digest functions sha256/);
  });

  it('refuses an upstream whose action cache is read-only while pushing, with what to do', async () => {
    // A read-only upstream: a reexec whose anonymous callers may only read.
    up = await startTestDaemon((c) => {
      c.auth.tokenFile = writeTokenFile();
      c.auth.anonymous = ['read'];
    });
    await expect(UpstreamConnection.open(upstreamAt(`grpc://${up.address}`), { log })).rejects.toThrow(/does not allow action cache updates/);
    conn = await UpstreamConnection.open(upstreamAt(`grpc://${up.address}`, { push: false }), { log, push: false });
    expect(conn.health().state).toBe('up');
  });

  it('starts down when the upstream is unreachable, fails calls at once naming it, and comes up when it appears', async () => {
    up = await startTestDaemon();
    const address = up.address;
    const dataDir = up.dataDir;
    await up.daemon.stop(1000);
    conn = await UpstreamConnection.open(upstreamAt(`grpc://${address}`, { retry: { initialSeconds: 0.05, maxSeconds: 0.2 } }), { log });
    expect(conn.health()).toMatchObject({ state: 'down', lastError: expect.stringContaining(`upstream grpc://${address}`) });
    const err = await conn.unary('cas', 'FindMissingBlobs', { instanceName: '', blobDigests: [] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UpstreamError);
    expect((err as UpstreamError).code).toBe(grpc.status.UNAVAILABLE);
    expect((err as UpstreamError).message).toContain(`upstream grpc://${address}`);
    let ups = 0;
    conn.onUp(() => ups++);
    const port = Number(address.split(':')[1]);
    up.clients.close();
    up = await startTestDaemon((c) => {
      c.listen = [`127.0.0.1:${port}`];
    }, dataDir);
    await waitFor('the upstream to be seen up again', () => conn!.health().state === 'up');
    expect(ups).toBe(1);
  });
});

function writeTokenFile(): string {
  const dir = mkdtempSync(join(tmpdir(), 'reexec-up-token-'));
  writeFileSync(`${dir}/tokens.yaml`, 'writer-token-0123456789: [read, write]\n', { mode: 0o600 });
  return `${dir}/tokens.yaml`;
}
