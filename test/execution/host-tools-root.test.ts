import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { treeFromDirectory, type LocalTree } from '../../src/client/merkle.js';
import { compileConfig, ConfigError } from '../../src/config/config.js';
import { checkHostToolsRoot } from '../../src/execution/host-tools-root.js';
import { findBubblewrap } from '../../src/runner/bubblewrap-runner.js';
import { BUSYBOX, makeBusyboxRoot } from '../helpers/busybox-root.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { execute, readBlob, uploadAction, uploadTree } from '../helpers/exec-client.js';

/**
 * execution.host-tools.root: the file system host-tools actions see as "/" (a toolchain root,
 * such as the Debian testing root Bazel 7 configured its C++ toolchain in).
 */
const missing = !BUSYBOX ? 'busybox-static' : !findBubblewrap() ? 'bubblewrap' : undefined;
const HOST_TOOLS: Array<[string, string]> = [['OSFamily', 'linux'], ['reexec-sandbox', 'host-tools']];

describe('execution.host-tools.root in the config', () => {
  it('defaults to the host\'s "/", takes a path, and keeps the section a mapping of known settings', () => {
    expect(compileConfig({}).execution.hostTools).toEqual({ root: '/', hide: [], expose: [] });
    expect(compileConfig({ execution: { 'host-tools': { root: '/srv/toolchain' } } }).execution.hostTools.root).toBe('/srv/toolchain');
    expect(() => compileConfig({ execution: { 'host-tools': '/srv' } })).toThrow(/"host-tools" must be a mapping/);
    expect(() => compileConfig({ execution: { 'host-tools': { rot: '/srv' } } })).toThrow(/host-tools: no setting "rot" \(root, hide, expose\)/);
    expect(() => compileConfig({ execution: { 'host-tools': { root: 3 } } })).toThrow(/"root" must be the path of a directory/);
    // hide and expose (issue 18) sit beside root: paths inside it.
    expect(compileConfig({ execution: { 'host-tools': { root: '/srv/t', hide: ['/opt/secret'], expose: '/var/lib/mysql' } } }).execution.hostTools).toEqual({
      root: '/srv/t',
      hide: ['/opt/secret'],
      expose: ['/var/lib/mysql'],
    });
    expect(() => compileConfig({ execution: { 'host-tools': { hide: ['opt'] } } })).toThrow(/"hide" must be a list of absolute paths/);
  });

  it('is checked when the daemon starts: a directory with a /bin/sh, or an error saying what is wrong', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'reexec-htroot-'));
    try {
      await expect(checkHostToolsRoot(join(dir, 'absent'))).rejects.toThrow(/execution\.host-tools\.root ".*absent" does not exist/);
      writeFileSync(join(dir, 'file'), '');
      await expect(checkHostToolsRoot(join(dir, 'file'))).rejects.toThrow(/is not a directory/);
      mkdirSync(join(dir, 'empty'));
      await expect(checkHostToolsRoot(join(dir, 'empty'))).rejects.toThrow(/does not look like a root file system: it has no \/bin\/sh/);
      await expect(checkHostToolsRoot(join(dir, 'empty'))).rejects.toBeInstanceOf(ConfigError);
      await expect(checkHostToolsRoot('/')).resolves.toBeUndefined();
      await expect(startTestDaemon((c) => (c.execution.hostTools.root = join(dir, 'empty')))).rejects.toThrow(/no \/bin\/sh/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe.skipIf(missing)(`host-tools actions in a configured root${missing ? ` (skipped: apt-get install ${missing})` : ''}`, () => {
  let d: TestDaemon;
  let toolchainRoot: string;
  let inputs: string;
  let tree: LocalTree;
  beforeAll(async () => {
    toolchainRoot = makeBusyboxRoot((root) => {
      mkdirSync(join(root, 'etc'), { recursive: true });
      writeFileSync(join(root, 'etc', 'toolchain-marker'), 'the configured root\n');
      // What the host-tools view hides and shows, inside this root (issue 18).
      for (const [path, text] of [
        ['var/lib/dpkg/status', 'dpkg\n'],
        ['var/lib/mysql/db', 'db\n'],
        ['var/lib/tool/data', 'tool\n'],
        ['home/alice/secret', 'alice\n'],
        ['opt/secret', 'opt\n'],
      ]) {
        mkdirSync(dirname(join(root, path)), { recursive: true });
        writeFileSync(join(root, path), text);
      }
    });
    // The data dir inside the root: the sandbox would see it at /var/cache/reexec, so it is hidden there.
    const dataDir = join(toolchainRoot, 'var', 'cache', 'reexec');
    mkdirSync(dataDir, { recursive: true });
    d = await startTestDaemon((c) => {
      c.execution.hostTools = { root: toolchainRoot, hide: ['/opt/secret'], expose: ['/var/lib/tool'] };
    }, dataDir);
    inputs = mkdtempSync(join(tmpdir(), 'reexec-htinputs-'));
    writeFileSync(join(inputs, 'input.txt'), 'an input\n');
    tree = await treeFromDirectory(inputs);
    await uploadTree(d.clients, tree);
  });
  afterAll(async () => {
    await d?.stop();
    for (const p of [toolchainRoot, inputs]) if (p) rmSync(p, { recursive: true, force: true });
  });

  it('sees the configured root read-only as "/", with the input root as working tree', async () => {
    const action = await uploadAction(d.clients, tree.root, {
      args: ['/bin/sh', '-c', `cat /etc/toolchain-marker input.txt; pwd; test -e ${process.execPath} && echo host-visible; touch /etc/x 2>/dev/null || echo read-only`],
      platform: HOST_TOOLS,
    });
    const { response } = await execute(d.clients, action);
    expect(response!.result!.exitCode, (await readBlob(d.clients, response!.result!.stderrDigest)).toString()).toBe(0);
    expect((await readBlob(d.clients, response!.result!.stdoutDigest)).toString()).toBe('the configured root\nan input\n/tmp/reexec-build\nread-only\n');
  });

  it("hides that root's private paths, hide and the daemon's data dir inside it; shows what tools read and expose", async () => {
    const script = [
      'cat /var/lib/dpkg/status /var/lib/tool/data',
      'cat /var/lib/mysql/db 2>/dev/null || echo no-var-lib',
      'cat /home/alice/secret 2>/dev/null || echo no-home',
      'cat /opt/secret 2>/dev/null || echo no-hidden',
      // The data dir lets the run-as user through (to reach work/ and cache/): only hiding keeps it out.
      'test -e /var/cache/reexec/work && echo data-dir-visible || echo no-data-dir',
    ].join('; ');
    const action = await uploadAction(d.clients, tree.root, { args: ['/bin/sh', '-c', script], platform: HOST_TOOLS, doNotCache: true });
    const { response } = await execute(d.clients, action);
    expect(response!.result!.exitCode, (await readBlob(d.clients, response!.result!.stderrDigest)).toString()).toBe(0);
    expect((await readBlob(d.clients, response!.result!.stdoutDigest)).toString()).toBe('dpkg\ntool\nno-var-lib\nno-home\nno-hidden\nno-data-dir\n');
  });
});
