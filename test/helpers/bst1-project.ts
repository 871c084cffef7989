import { randomBytes } from 'node:crypto';
import { copyFileSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { isExecutable, isStaticElf, runClient } from './run-client.js';

/** Debian 12's BuildStream 1.6 and what its end-to-end tests need. */
export const BST = '/usr/bin/bst';
export const BST_BUSYBOX = ['/bin/busybox', '/usr/bin/busybox'].find((p) => isExecutable(p) && isStaticElf(p));
export const bst1Missing = [
  !isExecutable(BST) && 'buildstream (for /usr/bin/bst)',
  !isExecutable('/usr/bin/bwrap') && 'bubblewrap (BuildStream builds in bwrap)',
  !BST_BUSYBOX && 'busybox-static (a static /bin/busybox for the sysroot)',
].filter((m): m is string => Boolean(m));
export const bst1SkipReason = bst1Missing.length
  ? `skipped: install the Debian package${bst1Missing.length > 1 ? 's' : ''} ${bst1Missing.join(', ')}`
  : '';

export interface Bst1Project {
  project: string;
  cacheDir: string;
  /** Unique per run: the element's cache key, and so every artifact, is new to the server. */
  token: string;
  bst: (...args: string[]) => ReturnType<typeof runClient>;
}

/**
 * A tiny offline BuildStream 1.6 project in `tmp` whose artifact cache is reexec on `port`:
 * base.bst imports a busybox sysroot (relative applet links: `busybox --install -s` would write
 * host paths), hello.bst (manual) installs a token file and a payload large enough to be a
 * file-backed blob on the server and several ByteStream chunks.
 */
export function makeBst1Project(tmp: string, port: number, timeoutMs: number): Bst1Project {
  const project = join(tmp, 'project');
  const cacheDir = join(tmp, 'cache');
  const token = `hello from reexec ${randomBytes(8).toString('hex')}`;

  const bin = join(project, 'files', 'sysroot', 'bin');
  mkdirSync(bin, { recursive: true });
  copyFileSync(BST_BUSYBOX!, join(bin, 'busybox'));
  for (const applet of ['sh', 'mkdir', 'echo', 'cat', 'cp', 'ls', 'rm', 'find', 'chmod', 'true', 'env', 'test', '[']) {
    symlinkSync('busybox', join(bin, applet));
  }
  mkdirSync(join(project, 'files', 'sysroot', 'usr'));
  symlinkSync('../bin', join(project, 'files', 'sysroot', 'usr', 'bin'));

  mkdirSync(join(project, 'elements'));
  writeFileSync(
    join(project, 'project.conf'),
    ['name: reexec-e2e', 'format-version: 12', 'element-path: elements', 'artifacts:', `  url: http://127.0.0.1:${port}`, '  push: true', ''].join('\n'),
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
      '  - cat /bin/busybox > %{install-root}/share/hello/payload',
      '',
    ].join('\n'),
  );
  const userConf = join(tmp, 'buildstream.conf');
  writeFileSync(userConf, ['sourcedir', 'builddir', 'artifactdir', 'logdir'].map((k) => `${k}: ${join(cacheDir, k)}`).join('\n') + '\n');
  // Debian's bst runs on /usr/bin/python3: a python3 earlier on PATH (pyenv, venv) cannot see
  // Debian's modules, and its variables must not leak in either.
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const k of ['PYTHONPATH', 'PYTHONHOME', 'VIRTUAL_ENV', 'PYENV_VERSION']) delete env[k];
  Object.assign(env, {
    PATH: `/usr/bin:/bin:/usr/sbin:/sbin${process.env.PATH ? `:${process.env.PATH}` : ''}`,
    LANG: 'C.UTF-8',
    LC_ALL: 'C.UTF-8',
    XDG_CACHE_HOME: join(tmp, 'xdg-cache'),
    XDG_CONFIG_HOME: join(tmp, 'xdg-config'),
    XDG_DATA_HOME: join(tmp, 'xdg-data'),
  });
  const bst = (...args: string[]) =>
    runClient(BST, ['--no-interactive', '--on-error', 'terminate', '-c', userConf, ...args], { cwd: project, env, timeoutMs });
  return { project, cacheDir, token, bst };
}
