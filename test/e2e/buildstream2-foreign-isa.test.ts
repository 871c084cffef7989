import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { detectIsaSupport } from '../../src/execution/isa-support.js';
import { bst2UserConfig, makeBst2Project, runBst2 } from '../helpers/bst2-project.js';
import { makeClientsWork, prepareClientsRoot } from '../helpers/clients-root.js';
import { startDaemonProcess, type DaemonProcess } from '../helpers/daemon-process.js';
import { listOperations } from '../helpers/daemon-operations.js';
import { foreignBusybox } from '../helpers/foreign-busybox.js';
import { describeRun, isExecutable, removeTree } from '../helpers/run-client.js';

/**
 * What foreign-ISA workers are for: BuildStream 2.8 on an x86-64 machine builds an element
 * with `sandbox: {build-arch: aarch64}` on reexec. BuildStream does not check the local
 * platform for a remote build (only its local buildbox-run sandbox does): it sends the
 * platform property ISA=aarch64, and reexec runs the commands under QEMU user mode in the
 * element's arm64 busybox sysroot, every child process emulated through binfmt_misc.
 */
const why = ((): string | undefined => {
  if (process.platform !== 'linux' || process.arch !== 'x64') return 'this test emulates aarch64 on an x86-64 Linux host';
  if (!isExecutable('/usr/bin/bwrap')) return 'install the Debian package bubblewrap (reexec runs actions in bwrap)';
  return undefined;
})();
const aarch64 = why ? undefined : (await detectIsaSupport({ bubblewrapOk: true })).find((s) => s.isa === 'aarch64');
const skip =
  why ??
  (!aarch64?.ok ? `QEMU user mode for aarch64 is not usable here: ${aarch64?.detail ?? 'not detected'} (fix: ${aarch64?.fix ?? 'install qemu-user-static'}, or run \`reexec init --setup-binfmt\` as root)` : undefined) ??
  prepareClientsRoot().skip;
if (skip) console.warn(`BuildStream 2 foreign-ISA end-to-end test skipped: ${skip}`);

const TIMEOUT = 5 * 60_000;

describe.skipIf(!!skip)(`BuildStream 2.8 builds a build-arch: aarch64 element on reexec${skip ? ` (skipped: ${skip})` : ''}`, () => {
  let root: string;
  let daemon: DaemonProcess | undefined;
  let work: string; // host path, inside the clients root
  let inside: string; // the same folder as the clients root sees it
  let url: string;
  // Unique per run: the element's cache key, and so its action, is new to the server.
  const token = randomBytes(8).toString('hex');

  const bst = (...args: string[]) => runBst2(root, inside, 'buildstream.conf', args, TIMEOUT - 10_000);

  beforeAll(async () => {
    root = prepareClientsRoot().root!;
    const busybox = foreignBusybox('arm64');
    if (!busybox.path) throw new Error(`cannot get busybox-static:arm64: ${busybox.why}`);
    ({ work, inside } = makeClientsWork(root, 'reexec-bst2-arm-'));
    daemon = await startDaemonProcess({ dataDir: join(work, 'server') });
    url = `http://127.0.0.1:${daemon.port}`;

    // An arm64 busybox sysroot (Debian's busybox-static:arm64), applets as relative symlinks.
    const project = join(work, 'project');
    makeBst2Project(root, project, 'reexec-e2e-arm', busybox.path);
    writeFileSync(
      join(project, 'elements', 'arm.bst'),
      [
        'kind: manual',
        'build-depends:',
        '- base.bst',
        'sandbox:',
        '  build-arch: aarch64',
        'config:',
        '  install-commands:',
        '  - mkdir -p %{install-root}',
        '  - uname -m > %{install-root}/arch',
        // A pipeline: every process of it is an arm64 busybox, emulated too.
        '  - echo c b a | tr " " "\\n" | sort | tr "\\n" " " > %{install-root}/sorted',
        `  - echo ${token} > %{install-root}/token`,
        '  - i=0; while [ $i -lt 100 ]; do i=$((i+1)); done; echo $i > %{install-root}/count',
        '',
      ].join('\n'),
    );
    const server = `{url: "${url}", push: true}`;
    writeFileSync(join(work, 'buildstream.conf'), bst2UserConfig(inside, { artifacts: server, remoteExecution: { service: `{url: "${url}"}`, actionCache: server } }));
  });

  afterAll(async () => {
    await daemon?.stop();
    if (work) removeTree(work);
  });

  it(
    'runs the commands on an aarch64 worker: uname -m says aarch64 and the pipeline works',
    async () => {
      const build = await bst('build', 'arm.bst');
      const why = describeRun('bst build arm.bst', build);
      expect(build.code, why).toBe(0);
      expect(build.output, why).toMatch(/arm\.bst.*Waiting for the remote build to complete/);
      expect(build.output, why).toMatch(new RegExp(`push:arm\\.bst.*Pushed artifact [0-9a-f]+ -> ${url}`));

      // reexec ran it (no cache hit), in its aarch64 pool, and it succeeded.
      const ops = await listOperations(daemon!.port);
      const ran = ops.filter((o) => o.done && !o.cachedResult && o.exitCode === 0);
      expect(ran.length, JSON.stringify(ops)).toBe(1);
      expect(ran[0]!.worker, JSON.stringify(ops)).toMatch(/^reexec\/aarch64-\d+$/);

      // Only the files: a checkout stages through a local sandbox, which cannot run aarch64
      // integration commands on this host (BuildStream falls back to its dummy sandbox).
      const co = await bst('artifact', 'checkout', '--deps', 'none', '--no-integrate', 'arm.bst', '--directory', `${inside}/checkout`);
      expect(co.code, describeRun('bst artifact checkout arm.bst', co)).toBe(0);
      expect(readFileSync(join(work, 'checkout', 'arch'), 'utf8')).toBe('aarch64\n');
      expect(readFileSync(join(work, 'checkout', 'sorted'), 'utf8')).toBe('a b c ');
      expect(readFileSync(join(work, 'checkout', 'token'), 'utf8')).toBe(`${token}\n`);
      expect(readFileSync(join(work, 'checkout', 'count'), 'utf8')).toBe('100\n');
      expect(daemon!.errorLines()).toEqual([]);
    },
    TIMEOUT,
  );
});
