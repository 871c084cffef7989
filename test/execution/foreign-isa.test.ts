import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { treeFromDirectory } from '../../src/client/merkle.js';
import { detectIsaSupport } from '../../src/execution/isa-support.js';
import { findBubblewrap } from '../../src/runner/bubblewrap-runner.js';
import { BUSYBOX } from '../helpers/busybox-root.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { execute, readBlob, uploadAction, uploadTree } from '../helpers/exec-client.js';
import { foreignBusybox, makeRootAround, riscvExecutable } from '../helpers/foreign-busybox.js';

const support = process.arch === 'x64' && findBubblewrap() ? await detectIsaSupport({ bubblewrapOk: true }) : [];
const offered = (isa: string): boolean => support.some((s) => s.isa === isa && s.ok);

// Debian architecture → ISA asked for (BuildStream's name) and what `uname -m` says inside.
const CASES = [
  { deb: 'arm64', isa: 'aarch64', alias: 'arm-a64', uname: 'aarch64' },
  { deb: 'armhf', isa: 'aarch32', alias: 'arm-a32', uname: 'armv7l' },
  { deb: 'ppc64el', isa: 'power-isa-le', alias: 'power-isa-le', uname: 'ppc64le' },
  { deb: 's390x', isa: 's390x', alias: 's390x', uname: 's390x' },
  { deb: 'i386', isa: 'x86-32', alias: 'x86-32', uname: 'i686' },
];

const why = process.arch !== 'x64' ? 'these tests assume an x86-64 host' : !findBubblewrap() ? 'bubblewrap is not installed' : undefined;

describe.skipIf(why)(`foreign ISAs${why ? ` (skipped: ${why})` : ''}`, () => {
  let d: TestDaemon;
  const roots: string[] = [];
  beforeAll(async () => {
    d = await startTestDaemon();
  });
  afterAll(async () => {
    await d?.stop();
    for (const r of roots) rmSync(r, { recursive: true, force: true });
  });

  for (const c of CASES) {
    const hint = offered(c.isa) ? undefined : support.find((s) => s.isa === c.isa)?.detail ?? 'not offered';
    it.skipIf(hint)(`${c.isa}: uname -m and a pipeline of emulated children${hint ? ` (skipped: ${hint}; run \`reexec init --setup-binfmt\` as root)` : ''}`, async () => {
      const bb = foreignBusybox(c.deb);
      if (!bb.path) throw new Error(`cannot get busybox-static:${c.deb}: ${bb.why}`);
      const root = makeRootAround(bb.path);
      roots.push(root);
      const tree = await treeFromDirectory(root);
      await uploadTree(d.clients, tree);
      const action = await uploadAction(d.clients, tree.root, {
        args: ['sh', '-c', 'uname -m; echo one two three | tr " " "\\n" | wc -l'],
        platform: [['ISA', c.alias], ['OSFamily', 'linux']],
      });
      const { response, error } = await execute(d.clients, action);
      expect(error).toBeUndefined();
      expect(response!.result!.exitCode).toBe(0);
      const out = (await readBlob(d.clients, response!.result!.stdoutDigest)).toString().split('\n').map((l) => l.trim());
      expect(out.slice(0, 2)).toEqual([c.uname, '3']);
    });
  }

  const rvHint = offered('rv64g') ? undefined : support.find((s) => s.isa === 'rv64g')?.detail ?? 'not offered';
  it.skipIf(rvHint)(`rv64g: a static riscv64 program runs${rvHint ? ` (skipped: ${rvHint})` : ''}`, async () => {
    const rv = riscvExecutable();
    if (!rv.path) throw new Error(`cannot get a riscv64 executable: ${rv.why}`);
    const root = makeRootAround(BUSYBOX ?? '/bin/busybox', { esbuild: rv.path });
    roots.push(root);
    const tree = await treeFromDirectory(root);
    await uploadTree(d.clients, tree);
    const action = await uploadAction(d.clients, tree.root, { args: ['/usr/bin/esbuild', '--version'], platform: [['ISA', 'rv64g'], ['OSFamily', 'linux']] });
    const { response } = await execute(d.clients, action);
    expect(response!.result!.exitCode).toBe(0);
    expect((await readBlob(d.clients, response!.result!.stdoutDigest)).toString()).toMatch(/^0\.25\.\d+/);
  });

  it('refuses an ISA no pool provides with FAILED_PRECONDITION naming it', async () => {
    // The platform is checked before the inputs: nothing needs uploading to learn the ISA is refused.
    const action = await uploadAction(d.clients, (await treeFromDirectory(makeRootAround('/bin/busybox'))).root, { args: ['true'], platform: [['ISA', 'sparc-v9']] });
    const { error } = await execute(d.clients, action);
    expect(error?.code).toBe(9);
    expect(error?.details).toContain('sparc-v9');
  });
});
