import { randomBytes } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT, startDaemonProcess, type DaemonProcess } from '../helpers/daemon-process.js';
import { describeRun, isExecutable, isStaticElf, removeTree, runClient } from '../helpers/run-client.js';

/**
 * BuildStream 1.6 (Debian 12's `buildstream`) with reexec as its artifact cache, across an
 * eviction: after `reexec gc --target 0` the artifacts' blobs are gone, so the artifacts
 * (Remote Asset bindings) are misses, never half-served: bst builds again, pushes again, and
 * the next empty-cache build pulls. (Set-up as in buildstream1.test.ts.)
 */
const BST = '/usr/bin/bst';
const BUSYBOX = ['/bin/busybox', '/usr/bin/busybox'].find((p) => isExecutable(p) && isStaticElf(p));
const missing = [
  !isExecutable(BST) && 'buildstream (for /usr/bin/bst)',
  !isExecutable('/usr/bin/bwrap') && 'bubblewrap (BuildStream builds in bwrap)',
  !BUSYBOX && 'busybox-static (a static /bin/busybox for the sysroot)',
].filter((m): m is string => Boolean(m));
const skipReason = missing.length ? `skipped: install the Debian package${missing.length > 1 ? 's' : ''} ${missing.join(', ')}` : '';
if (skipReason) console.warn(`BuildStream 1.6 eviction end-to-end test ${skipReason}`);

const TIMEOUT = 5 * 60_000;

describe.skipIf(missing.length > 0)(`BuildStream 1.6 across an eviction${skipReason ? ` (${skipReason})` : ''}`, () => {
  let daemon: DaemonProcess | undefined;
  let tmp: string;
  let project: string;
  let cacheDir: string;
  let userConf: string;
  let env: NodeJS.ProcessEnv;
  // Unique per run: the element's cache key, and so every artifact, is new to the server.
  const token = `hello from reexec ${randomBytes(8).toString('hex')}`;

  const bst = (...args: string[]) =>
    runClient(BST, ['--no-interactive', '--on-error', 'terminate', '-c', userConf, ...args], { cwd: project, env, timeoutMs: TIMEOUT - 10_000 });

  beforeAll(async () => {
    tmp = mkdtempSync(join(tmpdir(), 'reexec-bst1-gc-'));
    // No grace period: everything can be evicted on request.
    const config = join(tmp, 'reexec.yaml');
    writeFileSync(config, 'storage:\n  grace-period: 0\nmetrics:\n  listen: off\nexecution:\n  enabled: false\n');
    daemon = await startDaemonProcess({ dataDir: join(tmp, 'server'), args: ['--config', config] });
    project = join(tmp, 'project');
    cacheDir = join(tmp, 'cache');

    // A busybox sysroot: relative applet links (busybox --install -s would write host paths).
    const bin = join(project, 'files', 'sysroot', 'bin');
    mkdirSync(bin, { recursive: true });
    copyFileSync(BUSYBOX!, join(bin, 'busybox'));
    for (const applet of ['sh', 'mkdir', 'echo', 'cat', 'cp', 'ls', 'rm', 'find', 'chmod', 'true', 'env', 'test', '[']) {
      symlinkSync('busybox', join(bin, applet));
    }
    mkdirSync(join(project, 'files', 'sysroot', 'usr'));
    symlinkSync('../bin', join(project, 'files', 'sysroot', 'usr', 'bin'));

    mkdirSync(join(project, 'elements'));
    writeFileSync(
      join(project, 'project.conf'),
      ['name: reexec-e2e', 'format-version: 12', 'element-path: elements', 'artifacts:', `  url: http://127.0.0.1:${daemon.port}`, '  push: true', ''].join('\n'),
    );
    writeFileSync(join(project, 'elements', 'base.bst'), ['kind: import', 'sources:', '- kind: local', '  path: files/sysroot', ''].join('\n'));
    writeFileSync(
      join(project, 'elements', 'hello.bst'),
      [
        'kind: manual',
        'build-depends:',
        '- base.bst',
        'config:',
        '  install-commands:',
        '  - mkdir -p %{install-root}/share/hello',
        `  - echo "${token}" > %{install-root}/share/hello/hello.txt`,
        // Large enough to be a file-backed blob on the server and several ByteStream chunks.
        '  - cat /bin/busybox > %{install-root}/share/hello/payload',
        '',
      ].join('\n'),
    );
    userConf = join(tmp, 'buildstream.conf');
    writeFileSync(
      userConf,
      ['sourcedir', 'builddir', 'artifactdir', 'logdir'].map((k) => `${k}: ${join(cacheDir, k)}`).join('\n') + '\n',
    );
    // Debian's bst runs on /usr/bin/python3: a python3 earlier on PATH (pyenv, venv) cannot see
    // Debian's modules, and its variables must not leak in either.
    env = { ...process.env };
    for (const k of ['PYTHONPATH', 'PYTHONHOME', 'VIRTUAL_ENV', 'PYENV_VERSION']) delete env[k];
    Object.assign(env, {
      PATH: `/usr/bin:/bin:/usr/sbin:/sbin${process.env.PATH ? `:${process.env.PATH}` : ''}`,
      LANG: 'C.UTF-8',
      LC_ALL: 'C.UTF-8',
      XDG_CACHE_HOME: join(tmp, 'xdg-cache'),
      XDG_CONFIG_HOME: join(tmp, 'xdg-config'),
      XDG_DATA_HOME: join(tmp, 'xdg-data'),
    });
  });

  afterAll(async () => {
    await daemon?.stop();
    if (tmp) removeTree(tmp);
  });

  it(
    'builds again after its artifacts were evicted, pushes again, then pulls',
    async () => {
      const d = daemon!;
      const remote = `http://127.0.0.1:${d.port}`;
      const first = await bst('build', 'hello.bst');
      expect(first.code, describeRun('bst build', first)).toBe(0);
      expect(first.output.match(new RegExp(`Pushed artifact [0-9a-f]+ -> ${remote}`, 'g')) ?? [], describeRun('bst build', first)).toHaveLength(2);

      await new Promise((r) => setTimeout(r, 1100));
      const gc = await execa(process.execPath, [join(REPO_ROOT, 'bin', 'run.js'), 'gc', '--endpoint', `grpc://127.0.0.1:${d.port}`, '--target', '0', '--json'], { reject: false });
      expect(gc.exitCode, gc.stderr).toBe(0);
      const summary = JSON.parse(gc.stdout);
      expect(summary.freedBlobs).toBeGreaterThan(0);
      expect(summary.after.bytes).toBe(0);

      // Nothing to pull: both elements are built and pushed again.
      removeTree(join(cacheDir, 'artifactdir'));
      const second = await bst('build', 'hello.bst');
      expect(second.code, describeRun('bst build after gc', second)).toBe(0);
      expect(second.output, describeRun('bst build after gc', second)).not.toMatch(/Pulled artifact/);
      expect(second.output.match(new RegExp(`Pushed artifact [0-9a-f]+ -> ${remote}`, 'g')) ?? [], describeRun('bst build after gc', second)).toHaveLength(2);

      // And now the server has them whole again.
      removeTree(join(cacheDir, 'artifactdir'));
      const third = await bst('build', 'hello.bst');
      expect(third.code, describeRun('bst build', third)).toBe(0);
      expect(third.output, describeRun('bst build', third)).toMatch(/Pulled artifact [0-9a-f]+ <- /);
      expect(third.output, describeRun('bst build', third)).toMatch(/Build Queue:\s+processed 0\b/);
      const out = join(tmp, 'checkout');
      const checkout = await bst('checkout', 'hello.bst', out);
      expect(checkout.code, describeRun('bst checkout', checkout)).toBe(0);
      expect(readFileSync(join(out, 'share', 'hello', 'hello.txt'), 'utf8')).toBe(`${token}\n`);
      expect(readFileSync(join(out, 'share', 'hello', 'payload')).equals(readFileSync(BUSYBOX!))).toBe(true);

      expect(d.running(), `reexec died:\n${d.output()}`).toBe(true);
      expect(d.errorLines()).toEqual([]);
    },
    TIMEOUT,
  );
});
