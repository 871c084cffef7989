import { randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bst2RunOptions, bst2UserConfig, makeBst2Project, runBst2 } from '../helpers/bst2-project.js';
import { copyWithLibraries, makeClientsWork, prepareClientsRoot, runInRoot } from '../helpers/clients-root.js';
import { startDaemonProcess, type DaemonProcess } from '../helpers/daemon-process.js';
import { listOperations } from '../helpers/daemon-operations.js';
import { describeRun, isExecutable, removeTree } from '../helpers/run-client.js';

/**
 * BuildStream 2.8 (Debian testing, in the clients root) with reexec as artifact cache, source
 * cache and remote executor. BuildStream reaches reexec only through its own buildbox-casd:
 * CAS, ByteStream, ActionCache, Execute/WaitExecution, Remote Asset Fetch/Push, Capabilities.
 * Actions run on reexec in the rootfs sandbox (the input root is "/", a busybox sysroot).
 */
const clients = isExecutable('/usr/bin/bwrap') ? prepareClientsRoot() : { skip: 'install the Debian package bubblewrap (reexec runs actions in bwrap)' };
const skipReason = clients.skip ? `skipped: ${clients.skip}` : '';
if (skipReason) console.warn(`BuildStream 2 remote execution end-to-end test ${skipReason}`);

const TIMEOUT = 5 * 60_000;
// A sleep nobody else runs, to find the action's processes on the host.
const SLOW_SECONDS = `900.${Math.floor(Math.random() * 1e6)}`;
const slowProcesses = (): string[] =>
  readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .flatMap((p) => {
      try {
        const argv = readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0');
        return argv[0]?.endsWith('sleep') && argv[1] === SLOW_SECONDS ? [p] : [];
      } catch {
        return [];
      }
    });
const waitFor = async <T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> => {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
};

describe.skipIf(!!clients.skip)(`BuildStream 2.8 remote execution${skipReason ? ` (${skipReason})` : ''}`, () => {
  const root = clients.root!;
  let daemon: DaemonProcess | undefined;
  let work: string; // host path, inside the clients root
  let inside: string; // the same folder as the clients root sees it
  let url: string;
  // Unique per run: every cache key, and so every artifact and action, is new to the server.
  const token = randomBytes(8).toString('hex');

  const bst = (...args: string[]) => runBst2(root, inside, 'buildstream.conf', args, TIMEOUT - 10_000);

  beforeAll(async () => {
    ({ work, inside } = makeClientsWork(root, 'reexec-bst2-'));
    daemon = await startDaemonProcess({ dataDir: join(work, 'server') });
    url = `http://127.0.0.1:${daemon.port}`;

    // A busybox sysroot (Debian testing's busybox-static), applets as relative symlinks.
    const project = join(work, 'project');
    makeBst2Project(root, project, 'reexec-e2e');
    writeFileSync(
      join(project, 'elements', 'hello.bst'),
      [
        'kind: manual',
        'build-depends:',
        '- base.bst',
        'config:',
        '  build-commands:',
        // /dev/fd and procfs (<(...)), a writable /tmp, and the build directory being writable
        `  - echo "token ${token}" > /tmp/t && cat /tmp/t > built.txt`,
        '  - test "$(cat <(echo piped))" = piped',
        '  install-commands:',
        '  - mkdir -p %{install-root}/usr/share/hello',
        '  - echo "hello from $(uname -s) $(uname -m) as $(id -u)" > %{install-root}/usr/share/hello/hello.txt',
        '  - cp built.txt %{install-root}/usr/share/hello/',
        '  - ln -s hello.txt %{install-root}/usr/share/hello/link',
        // Plain and empty files at the top of the install root: the output's root Directory
        // must be canonical, buildbox-casd looks it up by its own encoding.
        '  - echo top > %{install-root}/top.txt && touch %{install-root}/empty',
        '',
      ].join('\n'),
    );
    // Built remotely on top of hello.bst's remotely built artifact.
    writeFileSync(
      join(project, 'elements', 'chain.bst'),
      [
        'kind: manual',
        'build-depends:',
        '- base.bst',
        '- hello.bst',
        'config:',
        '  install-commands:',
        '  - mkdir -p %{install-root}/usr/share/chain',
        '  - cat /usr/share/hello/built.txt /top.txt > %{install-root}/usr/share/chain/both.txt',
        '',
      ].join('\n'),
    );
    writeFileSync(
      join(project, 'elements', 'fail.bst'),
      [
        'kind: manual',
        'build-depends:',
        '- base.bst',
        'config:',
        '  install-commands:',
        '  - mkdir -p %{install-root}/usr/share/fail',
        `  - echo "written before failing ${token}" > %{install-root}/usr/share/fail/partial.txt`,
        `  - echo "about to fail ${token}" >&2`,
        '  - exit 7',
        '',
      ].join('\n'),
    );
    // Asks for a REAPI socket inside the sandbox (platform property remoteApisSocketPath) and
    // uses it with buildbox's own clients (from the clients root, with their libraries):
    // casupload and casdownload round-trip a directory, trexe runs a nested action.
    mkdirSync(join(project, 'files', 'tools'));
    await copyWithLibraries(root, ['/usr/bin/casupload', '/usr/bin/casdownload', '/usr/bin/trexe'], join(project, 'files', 'tools'));
    writeFileSync(join(project, 'elements', 'tools.bst'), 'kind: import\nsources:\n- kind: local\n  path: files/tools\n');
    const sock = 'unix:/tmp/reapi.sock';
    writeFileSync(
      join(project, 'elements', 'socket.bst'),
      [
        'kind: manual',
        'build-depends:',
        '- base.bst',
        '- tools.bst',
        'sandbox:',
        '  remote-apis-socket:',
        '    path: /tmp/reapi.sock',
        'environment:',
        '  LD_LIBRARY_PATH: /usr/lib/x86_64-linux-gnu',
        'config:',
        '  build-commands:',
        '  - test -S /tmp/reapi.sock',
        `  - mkdir -p payload && echo "payload ${token}" > payload/data.txt`,
        `  - casupload --remote=${sock} --output-digest-file=payload.digest payload`,
        `  - casdownload --remote=${sock} --root-digest=$(cat payload.digest) --destination-dir=back`,
        '  - cmp payload/data.txt back/data.txt',
        // A nested action's input root: busybox as /bin/sh.
        '  - mkdir -p nested/usr/bin nested/tmp nested/dev nested/proc && cp /usr/bin/busybox nested/usr/bin/ && ln -s busybox nested/usr/bin/sh && ln -s usr/bin nested/bin',
        `  - casupload --remote=${sock} --output-digest-file=nested.digest nested`,
        `  - trexe --remote=${sock} --input-root-digest=$(cat nested.digest) --platform-properties=OSFamily=linux,ISA=x86-64 --output-path=out.txt --d=nested-out -- /bin/sh -c 'echo "nested ${token}" > out.txt'`,
        '  install-commands:',
        '  - mkdir -p %{install-root}/usr/share/socket',
        '  - cp back/data.txt nested-out/out.txt %{install-root}/usr/share/socket/',
        '',
      ].join('\n'),
    );
    // Runs until cancelled.
    writeFileSync(
      join(project, 'elements', 'slow.bst'),
      ['kind: manual', 'build-depends:', '- base.bst', 'config:', '  install-commands:', `  - sleep ${SLOW_SECONDS}`, ''].join('\n'),
    );
    // Opened as a workspace: BuildStream sends mtimes (node properties) and asks for them back.
    mkdirSync(join(project, 'files', 'src'));
    writeFileSync(join(project, 'files', 'src', 'data.txt'), 'original\n');
    writeFileSync(
      join(project, 'elements', 'ws.bst'),
      [
        'kind: manual',
        'build-depends:',
        '- base.bst',
        'sources:',
        '- kind: local',
        '  path: files/src',
        'sandbox:',
        '  build-uid: 1234',
        '  build-gid: 4321',
        'config:',
        '  build-commands:',
        '  - date -u -r data.txt +%Y-%m-%dT%H:%M:%S > mtime.txt',
        '  - id -u > id.txt && id -g >> id.txt',
        '  install-commands:',
        '  - mkdir -p %{install-root}/out',
        '  - cp mtime.txt id.txt data.txt %{install-root}/out/',
        '',
      ].join('\n'),
    );
    const server = `{url: "${url}", push: true}`;
    writeFileSync(
      join(work, 'buildstream.conf'),
      bst2UserConfig(inside, { artifacts: server, sourceCaches: server, remoteExecution: { service: `{url: "${url}"}`, actionCache: server } }),
    );
  });

  afterAll(async () => {
    await daemon?.stop();
    if (work) removeTree(work);
  });

  const alive = () => {
    expect(daemon!.running(), `reexec died:\n${daemon!.output()}`).toBe(true);
    expect(daemon!.errorLines()).toEqual([]);
  };

  it(
    'builds elements on reexec, one on top of the other, and pushes their artifacts and sources there',
    async () => {
      const build = await bst('build', 'chain.bst');
      const why = describeRun('bst build chain.bst', build);
      expect(build.code, why).toBe(0);
      expect(build.output, why).toMatch(/hello\.bst.*Waiting for the remote build to complete/);
      expect(build.output, why).toMatch(/chain\.bst.*Waiting for the remote build to complete/);
      for (const el of ['base', 'hello', 'chain']) expect(build.output, why).toMatch(new RegExp(`push:${el}\\.bst.*Pushed artifact [0-9a-f]+ -> ${url}`));
      expect(build.output, why).toMatch(/Pushed source [0-9a-f]+ ->/);
      expect(build.output, why).not.toMatch(/Failed to (push|pull|initialize)|WARNING/);

      // The daemon itself ran the action (not a cache hit), and it succeeded.
      const ops = await listOperations(daemon!.port);
      expect(ops.filter((o) => o.done && !o.cachedResult && o.exitCode === 0).length, JSON.stringify(ops)).toBeGreaterThanOrEqual(2);
      const chain = await bst('artifact', 'checkout', 'chain.bst', '--directory', `${inside}/chain-checkout`);
      expect(chain.code, describeRun('bst artifact checkout chain.bst', chain)).toBe(0);
      expect(readFileSync(join(work, 'chain-checkout', 'usr', 'share', 'chain', 'both.txt'), 'utf8')).toBe(`token ${token}\ntop\n`);

      const co = await bst('artifact', 'checkout', 'hello.bst', '--directory', `${inside}/checkout`);
      expect(co.code, describeRun('bst artifact checkout', co)).toBe(0);
      const dir = join(work, 'checkout', 'usr', 'share', 'hello');
      expect(readFileSync(join(dir, 'hello.txt'), 'utf8')).toBe(`hello from Linux x86_64 as 0\n`);
      expect(readFileSync(join(dir, 'built.txt'), 'utf8')).toBe(`token ${token}\n`);
      expect(readFileSync(join(dir, 'link'), 'utf8')).toBe(`hello from Linux x86_64 as 0\n`);
      expect(readFileSync(join(work, 'checkout', 'top.txt'), 'utf8')).toBe('top\n');
      expect(readFileSync(join(work, 'checkout', 'empty'), 'utf8')).toBe('');
      alive();
    },
    TIMEOUT,
  );

  it(
    'pulls the artifact from reexec into an empty local cache instead of building',
    async () => {
      removeTree(join(work, 'cache'));
      removeTree(join(work, 'checkout'));
      const before = (await listOperations(daemon!.port)).length;
      const build = await bst('build', 'hello.bst');
      const why = describeRun('bst build hello.bst (empty cache)', build);
      expect(build.code, why).toBe(0);
      expect(build.output, why).toMatch(new RegExp(`Pulled artifact [0-9a-f]+ <- ${url}`));
      expect(build.output, why).toMatch(/Build Queue:\s+processed 0\b/);
      expect(build.output, why).not.toMatch(/Waiting for the remote build/);
      expect((await listOperations(daemon!.port)).length).toBe(before);
      const co = await bst('artifact', 'checkout', 'hello.bst', '--directory', `${inside}/checkout`);
      expect(co.code, describeRun('bst artifact checkout', co)).toBe(0);
      expect(readFileSync(join(work, 'checkout', 'usr', 'share', 'hello', 'built.txt'), 'utf8')).toBe(`token ${token}\n`);
      alive();
    },
    TIMEOUT,
  );

  it(
    'caches a failed remote build with its partial install root, on reexec too',
    async () => {
      const build = await bst('build', 'fail.bst');
      const why = describeRun('bst build fail.bst', build);
      expect(build.code, why).not.toBe(0);
      expect(build.output, why).toMatch(/fail\.bst.*Waiting for the remote build to complete/);
      // stdout and stderr of the failed action came back
      expect(build.output, why).toContain(`about to fail ${token}`);
      expect(build.output, why).toMatch(/Command 'exit 7' failed with exitcode 7/);
      const ops = await listOperations(daemon!.port);
      // (BuildStream's batch script turns the failed command into exit 1)
      expect(ops.some((o) => o.done && !o.cachedResult && o.exitCode !== 0 && o.statusCode === 0), JSON.stringify(ops)).toBe(true);

      const show = await bst('artifact', 'show', 'fail.bst');
      expect(show.output, describeRun('bst artifact show', show)).toMatch(/failed\s+fail\.bst/);

      // The failed artifact holds the install root as the action left it: in the build tree
      // BuildStream caches for failed builds, which `bst shell --use-buildtree` stages.
      const shellCat = `cat /buildstream-install/usr/share/fail/partial.txt`;
      const local = await bst('shell', '--build', '--use-buildtree', 'fail.bst', '--', 'sh', '-c', shellCat);
      expect(local.output, describeRun('bst shell --use-buildtree (local cache)', local)).toContain(`written before failing ${token}`);

      // Again from reexec alone: it has the failed artifact and its build tree.
      removeTree(join(work, 'cache'));
      const pull = await bst('--pull-buildtrees', 'artifact', 'pull', '--deps', 'all', 'fail.bst');
      const pwhy = describeRun('bst artifact pull fail.bst', pull);
      expect(pull.code, pwhy).toBe(0);
      expect(pull.output, pwhy).toMatch(new RegExp(`Pulled artifact [0-9a-f]+ <- ${url}`));
      const remote = await bst('shell', '--build', '--use-buildtree', 'fail.bst', '--', 'sh', '-c', shellCat);
      expect(remote.output, describeRun('bst shell --use-buildtree (pulled)', remote)).toContain(`written before failing ${token}`);
      alive();
    },
    TIMEOUT,
  );

  it(
    'builds an open workspace remotely: mtimes in and out, build-uid and build-gid',
    async () => {
      const open = await bst('workspace', 'open', '--directory', `${inside}/workspace`, 'ws.bst');
      expect(open.code, describeRun('bst workspace open', open)).toBe(0);
      writeFileSync(join(work, 'workspace', 'data.txt'), `edited ${token}\n`);
      const when = new Date('2001-02-03T04:05:06Z');
      utimesSync(join(work, 'workspace', 'data.txt'), when, when);

      const build = await bst('build', 'ws.bst');
      const why = describeRun('bst build ws.bst (workspace)', build);
      expect(build.code, why).toBe(0);
      expect(build.output, why).toMatch(/ws\.bst.*Waiting for the remote build to complete/);
      const co = await bst('artifact', 'checkout', 'ws.bst', '--directory', `${inside}/ws-checkout`);
      expect(co.code, describeRun('bst artifact checkout ws.bst', co)).toBe(0);
      const out = join(work, 'ws-checkout', 'out');
      expect(readFileSync(join(out, 'data.txt'), 'utf8')).toBe(`edited ${token}\n`);
      // The action saw the workspace file's mtime (an input node property)…
      expect(readFileSync(join(out, 'mtime.txt'), 'utf8')).toBe('2001-02-03T04:05:06\n');
      // …and ran as the project's build-uid and build-gid (unixUID, unixGID).
      expect(readFileSync(join(out, 'id.txt'), 'utf8')).toBe('1234\n4321\n');
      alive();
    },
    TIMEOUT,
  );

  it(
    'remote-apis-socket: a build command talks REAPI to reexec through the socket (casupload, casdownload, a nested trexe)',
    async () => {
      const build = await bst('build', 'socket.bst');
      const why = describeRun('bst build socket.bst', build);
      expect(build.code, why).toBe(0);
      expect(build.output, why).toMatch(/socket\.bst.*Waiting for the remote build to complete/);
      const co = await bst('artifact', 'checkout', 'socket.bst', '--directory', `${inside}/socket-checkout`);
      expect(co.code, describeRun('bst artifact checkout socket.bst', co)).toBe(0);
      const dir = join(work, 'socket-checkout', 'usr', 'share', 'socket');
      expect(readFileSync(join(dir, 'data.txt'), 'utf8')).toBe(`payload ${token}\n`);
      expect(readFileSync(join(dir, 'out.txt'), 'utf8')).toBe(`nested ${token}\n`);
      // The element's action and the nested one both ran on reexec.
      const ops = await listOperations(daemon!.port);
      expect(ops.filter((o) => o.done && !o.cachedResult && o.exitCode === 0 && o.statusCode === 0).length, JSON.stringify(ops)).toBeGreaterThanOrEqual(2);
      alive();
    },
    TIMEOUT,
  );

  it(
    'SIGTERM to bst cancels the remote action: the operation ends CANCELLED and its processes are gone',
    async () => {
      const pidFile = `${inside}/bst.pid`;
      const running = runInRoot(
        root,
        ['sh', '-c', `bst --no-interactive -c ${inside}/buildstream.conf build slow.bst & echo $! > ${pidFile}; wait $!`],
        bst2RunOptions(inside, TIMEOUT - 10_000),
      );
      const bstPid = () => Number(readFileSync(join(work, 'bst.pid'), 'utf8').trim());
      let op;
      try {
        op = await waitFor('the slow action to run on reexec', async () => {
          const executing = (await listOperations(daemon!.port)).find((o) => o.stage === 3);
          return executing && slowProcesses().length > 0 ? executing : undefined;
        });
      } finally {
        // Also when waiting failed: never leave bst running behind the test.
        process.kill(bstPid(), 'SIGTERM');
      }
      const build = await running;
      expect(build.code, describeRun('bst build slow.bst (terminated)', build)).not.toBe(0);
      const done = await waitFor('the operation to end', async () => (await listOperations(daemon!.port)).find((o) => o.name === op.name && o.done), 30_000);
      expect(done.statusCode, JSON.stringify(done)).toBe(1); // CANCELLED
      await waitFor('the action processes to go', async () => (slowProcesses().length === 0 ? true : undefined), 10_000);
      alive();
    },
    TIMEOUT,
  );
});
