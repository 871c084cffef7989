import { createHash } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { AccessPolicy, isAssetProbe, isLocalPeer, requirementOf } from '../../src/auth/access-policy.js';
import { LocalUsers } from '../../src/auth/local-users.js';
import { parseRights } from '../../src/auth/rights.js';
import { parseTokenFile, TokenFileError } from '../../src/auth/token-file.js';
import { compileConfig, ConfigError, defaultConfig } from '../../src/config/config.js';
import { renderClientSnippets, renderConfigFile, clientEndpoint } from '../../src/config/init-config.js';
import { exposureWarnings, tlsFor } from '../../src/daemon/exposure.js';
import { Code } from '../../src/util/status-error.js';

const md = (token?: string): grpc.Metadata => {
  const m = new grpc.Metadata();
  if (token) m.set('authorization', `Bearer ${token}`);
  return m;
};

describe('rights and token files', () => {
  it('parses rights from strings and lists; refuses unknown ones', () => {
    expect([...parseRights('read, write')]).toEqual(['read', 'write']);
    expect([...parseRights(['execute', 'READ'])].sort()).toEqual(['execute', 'read']);
    expect(parseRights('all').size).toBe(5);
    expect([...parseRights('read, write, worker')].sort()).toEqual(['read', 'worker', 'write']);
    expect(parseRights('none').size).toBe(0);
    expect(() => parseRights('read, delete')).toThrow(/unknown right "delete"/);
    expect(() => parseRights(3)).toThrow(/rights must be/);
  });

  it('reads "token: rights", {name, rights} and sha256: entries; refuses short or unprintable tokens', () => {
    const token = 'a'.repeat(32);
    const hashed = createHash('sha256').update('the-hashed-token-value').digest('hex');
    const entries = parseTokenFile(`${token}: read\nbbbbbbbbbbbbbbbbbbbb: {name: ci, rights: [read, write]}\nsha256:${hashed}: all\n`, 'f');
    expect(entries.map((e) => [e.name.startsWith('token-') ? 'auto' : e.name, [...e.rights].sort().join(',')])).toEqual([
      ['auto', 'read'],
      ['ci', 'read,write'],
      ['auto', 'admin,execute,read,worker,write'],
    ]);
    expect(entries[2]!.hash.toString('hex')).toBe(hashed);
    expect(() => parseTokenFile('short: read\n', 'f')).toThrow(TokenFileError);
    expect(() => parseTokenFile('short: read\n', 'f')).toThrow(/at least 16/);
    expect(() => parseTokenFile(`${token}: fly\n`, 'f')).toThrow(/unknown right/);
    expect(() => parseTokenFile('"bad token with spaces inside": read\n', 'f')).toThrow(/header/);
    expect(() => parseTokenFile('- a list\n', 'f')).toThrow(/mapping/);
    expect(parseTokenFile('# only comments\n', 'f')).toEqual([]);
  });
});

describe('access policy', () => {
  const remote = { remoteAddress: '192.0.2.7' };
  const loopback = { remoteAddress: '127.0.0.1' };

  it('maps every RPC to a right, with unknown methods needing admin and health checks open', () => {
    expect(requirementOf('/build.bazel.remote.execution.v2.ContentAddressableStorage/BatchUpdateBlobs')).toBe('write');
    expect(requirementOf('/google.bytestream.ByteStream/Read')).toBe('read');
    expect(requirementOf('/build.bazel.remote.execution.v2.Execution/Execute')).toBe('execute');
    expect(requirementOf('/google.longrunning.Operations/CancelOperation')).toBe('execute');
    expect(requirementOf('/reexec.admin.v1.Admin/CollectGarbage')).toBe('admin');
    expect(requirementOf('/some.future.Service/Method')).toBe('admin');
    expect(requirementOf('/grpc.health.v1.Health/Check')).toBe('open');
    expect(requirementOf('/build.bazel.remote.execution.v2.Capabilities/GetCapabilities')).toBe('any');
  });

  it('recognises asset probes: no URI, or an empty one', () => {
    expect(isAssetProbe({ uris: [] })).toBe(true);
    expect(isAssetProbe({ uris: ['a', ''] })).toBe(true);
    expect(isAssetProbe({})).toBe(true);
    expect(isAssetProbe({ uris: ['urn:x'] })).toBe(false);
  });

  it('without a token file: local users it admits get every right; others are refused, other machines need a certificate', () => {
    const me = process.getuid!();
    const p = new AccessPolicy(undefined, new Set(), LocalUsers.resolve([], '/etc/reexec.yaml', 4242));
    // The daemon's own user and root, over TCP; anyone the socket file lets in over a unix socket.
    for (const uid of [4242, 0]) expect(p.refusal(p.identify(md(), { ...loopback, uid }), 'admin', '/x/GetStatus')).toBeUndefined();
    expect(p.refusal(p.identify(md(), {}), 'admin', '/x/GetStatus')).toBeUndefined();
    // Another local user: PERMISSION_DENIED naming the setting, whatever address it came from.
    for (const peer of [{ ...loopback, uid: 4343 }, { ...remote, uid: 4343 }]) {
      expect(() => p.identify(md(), peer)).toThrow(expect.objectContaining({ code: Code.PERMISSION_DENIED, message: expect.stringMatching(/uid 4343.*auth\.local-users: \[4343\].*\/etc\/reexec\.yaml/) }));
    }
    // A loopback peer no socket row matches cannot be identified: refused.
    expect(() => p.identify(md(), loopback)).toThrow(expect.objectContaining({ code: Code.PERMISSION_DENIED, message: expect.stringMatching(/cannot tell which user/) }));
    // Another machine: needs credentials; a verified client certificate admits it (not to admin).
    expect(() => p.identify(md(), remote)).toThrow(expect.objectContaining({ code: Code.UNAUTHENTICATED, message: expect.stringMatching(/access token .* client certificate/) }));
    const withCert = p.identify(md(), { ...remote, certificate: true });
    expect(p.refusal(withCert, 'execute', '/x/Execute')).toBeUndefined();
    expect(p.refusal(withCert, 'admin', '/x/GetStatus')?.code).toBe(Code.PERMISSION_DENIED);
    // Bots on other machines: a client certificate lets them take work.
    expect(p.refusal(withCert, 'worker', '/google.devtools.remoteworkers.v1test2.Bots/CreateBotSession')).toBeUndefined();
    expect(p.needsOwner(loopback)).toBe(true);
    expect(p.needsOwner({})).toBe(false);
    // auth.local-users: a listed uid, or anyone with "any".
    const listed = new AccessPolicy(undefined, new Set(), LocalUsers.resolve([String(me)], 'f', 4242));
    // Every right: read, write, execute, admin, worker.
    expect(listed.identify(md(), { ...loopback, uid: me }).rights.size).toBe(5);
    const any = new AccessPolicy(undefined, new Set(), LocalUsers.resolve('any', 'f', 4242));
    expect(any.identify(md(), { ...loopback, uid: 4343 }).rights.size).toBe(5);
    expect(() => LocalUsers.resolve(['no-such-user-rx'], 'f')).toThrow(/no user "no-such-user-rx"/);
    expect(isLocalPeer({ remoteAddress: '::1' })).toBe(true);
    expect(isLocalPeer({ remoteAddress: '::ffff:127.0.0.1' })).toBe(true);
    expect(isLocalPeer({ remoteAddress: '::ffff:10.0.0.1' })).toBe(false);
  });

  it('with a token file: anonymous rights for clients without a token, UNAUTHENTICATED for a wrong one', () => {
    const tokens = { lookup: (t: string) => (t === 'good-token-good-token' ? { hash: Buffer.alloc(32), name: 'ci', rights: new Set(['read'] as const) } : undefined) };
    const p = new AccessPolicy(tokens as never, new Set(['read']));
    expect(p.identify(md(), remote).rights.has('read')).toBe(true);
    expect(p.refusal(p.identify(md(), remote), 'write', '/x/Write')?.code).toBe(Code.PERMISSION_DENIED);
    expect(() => p.identify(md('nope'), remote)).toThrow(/not valid/);
    expect(p.identify(md('good-token-good-token'), remote).name).toBe('ci');
    expect(p.rightsFor(md('nope')).size).toBe(0);
    const closed = new AccessPolicy(tokens as never);
    expect(closed.refusal(closed.identify(md(), loopback), 'read', '/x/Read')?.code).toBe(Code.UNAUTHENTICATED);
    // Loopback is not special once tokens are on: admin needs the admin right.
    expect(closed.refusal(closed.identify(md('good-token-good-token'), loopback), 'admin', '/x/GetStatus')?.code).toBe(Code.PERMISSION_DENIED);
  });
});

describe('security configuration', () => {
  it('compiles tls, auth, limits and per-listener TLS; refuses what is incomplete', () => {
    const c = compileConfig({
      listen: ['0.0.0.0:50051', { address: '127.0.0.1:50052', tls: 'off' }, 'unix:/run/r.sock'],
      tls: { cert: '/c.pem', key: '/k.pem', 'client-ca': '/ca.pem' },
      auth: { 'token-file': '/tokens.yaml', anonymous: ['read'] },
      limits: { 'max-calls-per-client': 10, 'idle-timeout': '30s', 'max-tree-depth': 64, 'max-tree-entries': 1000 },
    });
    expect(c.listen).toEqual(['0.0.0.0:50051', '127.0.0.1:50052', 'unix:/run/r.sock']);
    expect(c.tls).toEqual({ cert: '/c.pem', key: '/k.pem', clientCa: '/ca.pem' });
    expect(tlsFor(c, '0.0.0.0:50051')).toEqual(c.tls);
    expect(tlsFor(c, '127.0.0.1:50052')).toBeNull();
    expect(tlsFor(c, 'unix:/run/r.sock')).toBeNull();
    expect(c.auth).toEqual({ tokenFile: '/tokens.yaml', anonymous: ['read'], localUsers: [] });
    expect(compileConfig({ auth: { 'local-users': ['alice', 1001] } }).auth.localUsers).toEqual(['alice', '1001']);
    expect(compileConfig({ auth: { 'local-users': 'bob' } }).auth.localUsers).toEqual(['bob']);
    expect(compileConfig({ auth: { 'local-users': 'any' } }).auth.localUsers).toBe('any');
    expect(() => compileConfig({ auth: { 'local-users': ['alice; rm -rf /'] } })).toThrow(/local-users must be "any" or a list/);
    expect(() => compileConfig({ auth: { 'local-user': 'any' } })).toThrow(/no setting "local-user"/);
    expect(c.limits).toEqual({ ...defaultConfig().limits, maxCallsPerClient: 10, idleTimeoutSeconds: 30, maxTreeDepth: 64, maxTreeEntries: 1000 });
    expect(compileConfig({ limits: { 'idle-timeout': 0 } }).limits.idleTimeoutSeconds).toBe(0);
    // Connections: sizes and durations, 0 or off for none, "auto" for the open-file limit.
    const conn = compileConfig({
      limits: { 'max-connections': 100, 'max-connections-per-client': 8, 'handshake-timeout': '5s', 'connection-idle-timeout': 'off', 'keepalive-time': '30s', 'keepalive-timeout': '10s' },
    }).limits;
    expect(conn).toMatchObject({ maxConnections: 100, maxConnectionsPerClient: 8, handshakeTimeoutSeconds: 5, connectionIdleTimeoutSeconds: 0, keepaliveTimeSeconds: 30, keepaliveTimeoutSeconds: 10 });
    expect(compileConfig({ limits: { 'max-connections': 'auto', 'handshake-timeout': 0 } }).limits).toMatchObject({ maxConnections: 'auto', handshakeTimeoutSeconds: 0 });
    expect(() => compileConfig({ limits: { 'max-connections': -1 } })).toThrow(/max-connections/);
    expect(() => compileConfig({ limits: { 'handshake-timeout': 'soon' } })).toThrow(/handshake-timeout/);
    expect(() => compileConfig({ tls: { cert: '/c.pem' } })).toThrow(ConfigError);
    expect(() => compileConfig({ tls: { cert: '/c', key: '/k', ca: '/x' } })).toThrow(/no setting "ca"/);
    expect(() => compileConfig({ auth: { anonymous: 'everything' } })).toThrow(/unknown right/);
    expect(() => compileConfig({ listen: [{ tls: 'off' }] })).toThrow(ConfigError);
  });

  it('warns about listeners other machines reach without TLS or without tokens and client certificates', () => {
    const base = { ...defaultConfig(), listen: ['127.0.0.1:1', 'unix:/s', '0.0.0.0:2'] };
    const open = exposureWarnings(base);
    expect(open).toHaveLength(2);
    expect(open[0]).toMatch(/0\.0\.0\.0:2 .*without TLS/);
    expect(open[1]).toMatch(/without access tokens or client certificates reexec refuses them/);
    expect(exposureWarnings({ ...base, listen: ['127.0.0.1:1', '[::1]:3', 'localhost:4'] })).toEqual([]);
    const tlsOnly = exposureWarnings({ ...base, tls: { cert: 'c', key: 'k', clientCa: null } });
    expect(tlsOnly).toHaveLength(1);
    expect(tlsOnly[0]).toMatch(/refuses them/);
    expect(exposureWarnings({ ...base, tls: { cert: 'c', key: 'k', clientCa: 'ca' } })).toEqual([]);
    expect(exposureWarnings({ ...base, tls: { cert: 'c', key: 'k', clientCa: null }, auth: { tokenFile: 't', anonymous: [], localUsers: [] } })).toEqual([]);
  });

  it('`reexec init --tls` writes an active security section the config compiler accepts', () => {
    const security = { cert: '/t/server.crt', key: '/t/server.key', clientCa: '/t/ca.crt', tokenFile: '/t/tokens.yaml' };
    const c = compileConfig(parseYaml(renderConfigFile({ dataDir: '/d', listen: ['0.0.0.0:50051'], security })));
    expect(c.tls).toEqual({ cert: '/t/server.crt', key: '/t/server.key', clientCa: '/t/ca.crt' });
    expect(c.auth).toEqual({ tokenFile: '/t/tokens.yaml', anonymous: [], localUsers: [] });
    // Without --tls the section is there, commented out, and uncommented it says the same.
    const plain = renderConfigFile({ dataDir: '/d', listen: ['127.0.0.1:50051'] });
    expect(compileConfig(parseYaml(plain)).tls).toBeNull();
    expect(plain).toMatch(/^# tls:$/m);
  });

  it('client snippets over TLS: BuildStream 2 auth blocks, BuildStream 1.6 certificates, Bazel grpcs:// with a bearer header', () => {
    const files = { caCert: '/t/ca.crt', clientCert: '/t/client.crt', clientKey: '/t/client.key', token: 'T0KEN', tokenFile: '/t/client.token' };
    const s = renderClientSnippets(clientEndpoint(['0.0.0.0:50051']), files);
    const bst2 = parseYaml(s.buildstream2) as any;
    const auth = { 'server-cert': '/t/ca.crt', 'client-cert': '/t/client.crt', 'client-key': '/t/client.key', 'access-token': '/t/client.token' };
    expect(bst2.artifacts.servers).toEqual([{ url: 'https://127.0.0.1:50051', push: true, auth }]);
    expect(bst2['source-caches'].servers[0].auth).toEqual(auth);
    for (const k of ['execution-service', 'storage-service', 'action-cache-service']) expect(bst2['remote-execution'][k]).toEqual({ url: 'https://127.0.0.1:50051', auth });
    expect(parseYaml(s.buildstream1)).toEqual({
      artifacts: { url: 'https://127.0.0.1:50051', push: true, 'server-cert': '/t/ca.crt', 'client-cert': '/t/client.crt', 'client-key': '/t/client.key' },
    });
    const bazel = s.bazel.split('\n').filter((l) => l && !l.startsWith('#'));
    expect(bazel).toEqual([
      'build --remote_executor=grpcs://127.0.0.1:50051',
      'build --remote_cache=grpcs://127.0.0.1:50051',
      'build --tls_certificate=/t/ca.crt',
      'build --tls_client_certificate=/t/client.crt',
      'build --tls_client_key=/t/client.key',
      'build --remote_header=authorization=Bearer T0KEN',
    ]);
  });
});
