import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { compileConfig, ConfigError, defaultConfig, DEFAULT_LISTEN, type Config } from '../../src/config/config.js';
import {
  clientEndpoint,
  ConfigFileDiffersError,
  planInit,
  renderClientSnippets,
  renderConfigFile,
  renderTemplate,
  writeConfigFile,
} from '../../src/config/init-config.js';

const parse = (text: string): Record<string, unknown> => parseYaml(text) as Record<string, unknown>;

/** A config in which every value the template sets differs from the defaults. */
function everythingDifferent(): Config {
  return {
    ...defaultConfig(),
    listen: ['10.9.8.7:1'],
    dataDir: '/nowhere',
    instances: ['other'],
    storage: {
      inlineMaxBytes: 1,
      fsync: false,
      maxBatchBytes: 2048,
      maxBytes: { bytes: 7 },
      highWatermark: { bytes: 6 },
      lowWatermark: { bytes: 5 },
      hardLimit: { bytes: 8 },
      minFreeDisk: { bytes: 9 },
      diskReserve: { bytes: 4 },
      gracePeriodSeconds: 1,
      stagingCacheMaxBytes: { bytes: 3 },
    },
    grpc: { maxReceiveMessageBytes: 2 * 1024 * 1024, flowControlWindowBytes: 70000 },
    log: { format: 'json', level: 'error' },
    metrics: { listen: null },
    limits: {
      maxCallsPerClient: 1,
      idleTimeoutSeconds: 1,
      maxTreeDepth: 1,
      maxTreeEntries: 1,
      maxConnections: 1,
      maxConnectionsPerClient: 1,
      handshakeTimeoutSeconds: 1,
      connectionIdleTimeoutSeconds: 1,
      keepaliveTimeSeconds: 1,
      keepaliveTimeoutSeconds: 1,
    },
    auth: { tokenFile: null, anonymous: [], localUsers: ['somebody'] },
  };
}

describe('templates/config.yaml', () => {
  it('parses to exactly the defaults, spelling out every setting', () => {
    const defaults = defaultConfig();
    const text = renderConfigFile({ dataDir: defaults.dataDir, listen: defaults.listen });
    // Compiled over a base where everything differs: any setting the file left out would show.
    expect(compileConfig(parse(text), 'template', everythingDifferent())).toEqual({ ...defaults, source: undefined });
  });

  it('carries the chosen data dir and listen addresses, however they are spelled', () => {
    const dataDir = '/srv/re exec/"quoted" dir';
    const one = compileConfig(parse(renderConfigFile({ dataDir, listen: ['[::1]:6000'] })));
    expect(one.dataDir).toBe(dataDir);
    expect(one.listen).toEqual(['[::1]:6000']);
    const two = compileConfig(parse(renderConfigFile({ dataDir, listen: ['0.0.0.0:6000', 'unix:/run/reexec.sock'] })));
    expect(two.listen).toEqual(['0.0.0.0:6000', 'unix:/run/reexec.sock']);
  });

  it('explains every setting in a comment', () => {
    const text = renderConfigFile({ dataDir: '/d', listen: [DEFAULT_LISTEN] });
    const lines = text.split('\n');
    const settings = lines.map((l, i) => ({ l, i })).filter(({ l }) => /^\s*[a-z-]+:\s*\S/.test(l));
    expect(settings.map(({ l }) => l.trim().split(':')[0])).toEqual([
      'listen', 'data-dir', 'instances',
      'inline-max-bytes', 'fsync', 'max-batch-bytes',
      'max-bytes', 'high-watermark', 'low-watermark', 'hard-limit', 'min-free-disk', 'disk-reserve', 'grace-period', 'staging-cache-max-bytes',
      'max-receive-message-bytes', 'flow-control-window-bytes',
      'format', 'level',
      'listen',
      'max-calls-per-client', 'idle-timeout', 'max-tree-depth', 'max-tree-entries',
      'max-connections', 'max-connections-per-client', 'handshake-timeout', 'connection-idle-timeout', 'keepalive-time', 'keepalive-timeout',
      'enabled', 'max-entries', 'max-age', 'keep-failed',
      'local-users',
    ]);
    for (const { l, i } of settings) expect(lines[i - 1], `comment above "${l.trim()}"`).toMatch(/^\s*#/);
  });

  it('has the execution section commented out and marked as used by remote execution', () => {
    const text = renderConfigFile({ dataDir: '/d', listen: [DEFAULT_LISTEN] });
    expect(parse(text)).not.toHaveProperty('execution');
    expect(text).toMatch(/^# Used by remote execution|── Used by remote execution/m);
    expect(text).toMatch(/^# execution:$/m);
    expect(text).toMatch(/^#\s+default-timeout: /m);
    expect(text).toMatch(/^#\s+isa: x86-64$/m);
    expect(text).toMatch(/^#\s+slots: \d+$/m);
    // Uncommented, the preview is well-formed YAML with the shape it describes, and the
    // config compiler accepts it.
    const preview = text
      .slice(text.indexOf('# execution:'))
      .split('\n')
      .map((l) => l.replace(/^# ?/, ''))
      .join('\n');
    const raw = parse(preview);
    const execution = (raw as { execution: { 'default-timeout': string; pools: Array<{ isa: string; slots: number }> } }).execution;
    expect(execution['default-timeout']).toBe('24h');
    expect(execution.pools.map((p) => [p.isa, p.slots])).toEqual([['x86-64', 4], ['aarch64', 2]]);
    const compiled = compileConfig(raw);
    expect(compiled.execution.runAs).toBe('auto');
    expect(compiled.execution.hostTools).toEqual({ root: '/', hide: [], expose: [] });
  });

  it('writes auth.local-users as asked: a list of names, or any', () => {
    expect(compileConfig(parse(renderConfigFile({ dataDir: '/d', listen: [DEFAULT_LISTEN], localUsers: ['alice', 'bob'] }))).auth.localUsers).toEqual(['alice', 'bob']);
    expect(compileConfig(parse(renderConfigFile({ dataDir: '/d', listen: [DEFAULT_LISTEN], localUsers: 'any' }))).auth.localUsers).toBe('any');
  });

  it('refuses a template placeholder without a value', () => {
    expect(() => renderTemplate('a: {{missing}}', {})).toThrow(/\{\{missing\}\}/);
  });
});

describe('client snippets', () => {
  it('BuildStream 2: artifacts, source caches and remote execution at the http:// URL', () => {
    const { buildstream2 } = renderClientSnippets(clientEndpoint(['127.0.0.1:50051']));
    const conf = parse(buildstream2) as any;
    expect(conf.artifacts.servers).toEqual([{ url: 'http://127.0.0.1:50051', push: true }]);
    expect(conf['source-caches'].servers).toEqual([{ url: 'http://127.0.0.1:50051', push: true }]);
    expect(conf['remote-execution']).toEqual({
      'execution-service': { url: 'http://127.0.0.1:50051' },
      'storage-service': { url: 'http://127.0.0.1:50051' },
      // `push` here is rejected by BuildStream before 2.6: it stays a comment.
      'action-cache-service': { url: 'http://127.0.0.1:50051' },
    });
  });

  it('BuildStream 1.6: artifacts {url, push: true}', () => {
    const { buildstream1 } = renderClientSnippets(clientEndpoint(['127.0.0.1:50051']));
    expect(parse(buildstream1)).toEqual({ artifacts: { url: 'http://127.0.0.1:50051', push: true } });
  });

  it('Bazel: executor and cache with grpc://, the host-tools property commented', () => {
    const { bazel } = renderClientSnippets(clientEndpoint(['127.0.0.1:50051']));
    const active = bazel.split('\n').filter((l) => l && !l.startsWith('#'));
    expect(active).toEqual(['build --remote_executor=grpc://127.0.0.1:50051', 'build --remote_cache=grpc://127.0.0.1:50051']);
    expect(bazel).toContain('\n# build --remote_default_exec_properties=reexec-sandbox=host-tools\n');
  });

  it('wildcard addresses become loopback; IPv6 stays bracketed', () => {
    expect(clientEndpoint(['0.0.0.0:7000'])).toEqual({ httpUrl: 'http://127.0.0.1:7000', grpcUrl: 'grpc://127.0.0.1:7000', wildcard: '0.0.0.0' });
    expect(clientEndpoint(['[::]:7000'])).toMatchObject({ httpUrl: 'http://[::1]:7000', wildcard: '[::]' });
    expect(clientEndpoint(['[fd00::2]:7000'])).toEqual({ httpUrl: 'http://[fd00::2]:7000', grpcUrl: 'grpc://[fd00::2]:7000' });
  });

  it('unix sockets: Bazel connects with unix:, BuildStream is told it needs a TCP address', () => {
    const unixOnly = clientEndpoint(['unix:/run/reexec.sock']);
    expect(unixOnly).toEqual({ grpcUrl: 'unix:/run/reexec.sock' });
    const s = renderClientSnippets(unixOnly);
    expect(s.bazel).toContain('build --remote_executor=unix:/run/reexec.sock');
    expect(s.buildstream2).toMatch(/^# BuildStream connects only over http/);
    expect(parse(s.buildstream2)).toBeNull();
    // With a TCP address too, that one is used.
    expect(clientEndpoint(['unix:/run/reexec.sock', '127.0.0.1:1234']).grpcUrl).toBe('grpc://127.0.0.1:1234');
  });
});

describe('planInit and writeConfigFile', () => {
  let dir: string;
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('refuses port 0 and malformed addresses as config errors', () => {
    dir = mkdtempSync(join(tmpdir(), 'reexec-init-'));
    expect(() => planInit({ configPath: join(dir, 'c.yaml'), dataDir: dir, listen: ['127.0.0.1:0'] })).toThrow(ConfigError);
    expect(() => planInit({ configPath: join(dir, 'c.yaml'), dataDir: dir, listen: ['nonsense'] })).toThrow(ConfigError);
  });

  it('creates (with parent dirs), leaves an identical file alone, refuses a different one, and backs it up with force', () => {
    dir = mkdtempSync(join(tmpdir(), 'reexec-init-'));
    const path = join(dir, 'a', 'b', 'config.yaml');
    expect(writeConfigFile(path, 'one\n', false)).toEqual({ outcome: 'created' });
    expect(writeConfigFile(path, 'one\n', false)).toEqual({ outcome: 'unchanged' });
    expect(() => writeConfigFile(path, 'two\n', false)).toThrow(ConfigFileDiffersError);
    expect(() => writeConfigFile(path, 'two\n', false)).toThrow(/--force/);
    expect(readFileSync(path, 'utf8')).toBe('one\n');
    expect(writeConfigFile(path, 'two\n', true)).toEqual({ outcome: 'overwritten', backupPath: `${path}.bak` });
    expect(readFileSync(path, 'utf8')).toBe('two\n');
    expect(readFileSync(`${path}.bak`, 'utf8')).toBe('one\n');
    expect(readdirSync(join(dir, 'a', 'b')).sort()).toEqual(['config.yaml', 'config.yaml.bak']);
  });

  it('reports a path it cannot write as a config error', () => {
    dir = mkdtempSync(join(tmpdir(), 'reexec-init-'));
    writeFileSync(join(dir, 'file'), 'x');
    expect(() => writeConfigFile(join(dir, 'file', 'config.yaml'), 'x', false)).toThrow(ConfigError);
    expect(existsSync(join(dir, 'file', 'config.yaml'))).toBe(false);
  });
});
