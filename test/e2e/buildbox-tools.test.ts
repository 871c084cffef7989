import { spawnSync } from 'node:child_process';
import { chmodSync, cpSync, existsSync, lstatSync, mkdirSync, readFileSync, readlinkSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeBusyboxSysroot, makeClientsWork, prepareClientsRoot, runInRoot } from '../helpers/clients-root.js';
import { startDaemonProcess, type DaemonProcess } from '../helpers/daemon-process.js';
import { listOperations } from '../helpers/daemon-operations.js';
import { describeRun, isExecutable, removeTree } from '../helpers/run-client.js';

/**
 * buildbox 1.4's command-line clients (Debian testing, in the clients root) against a real
 * reexec process: casupload and casdownload (CAS, ByteStream, GetTree), trexe (Execute with an
 * input root digest and platform properties, outputs fetched back) and recc (a C compile sent
 * to reexec's host-tools sandbox, then an action cache hit).
 */
const clients = isExecutable('/usr/bin/bwrap') ? prepareClientsRoot() : { skip: 'install the Debian package bubblewrap (reexec runs actions in bwrap)' };
const skipReason = clients.skip ? `skipped: ${clients.skip}` : '';
if (skipReason) console.warn(`buildbox tools end-to-end test ${skipReason}`);

// recc's compiles run in the host-tools sandbox, i.e. with the *host's* compiler.
const hostGcc = isExecutable('/usr/bin/gcc') ? spawnSync('/usr/bin/gcc', ['--version'], { encoding: 'utf8' }).stdout.split('\n')[0] ?? '' : '';
const reccSkip = hostGcc ? '' : 'skipped: install the Debian package gcc on the host (recc compiles run with the host toolchain)';
if (!clients.skip && reccSkip) console.warn(`recc end-to-end test ${reccSkip}`);

const TIMEOUT = 3 * 60_000;

describe.skipIf(!!clients.skip)(`buildbox tools: casupload, trexe, recc${skipReason ? ` (${skipReason})` : ''}`, () => {
  const root = clients.root!;
  let daemon: DaemonProcess | undefined;
  let work: string; // host path, inside the clients root
  let inside: string; // the same folder as the clients root sees it
  let remote: string;
  let rootDigest: string;

  // Temporary files go with the test's folder, not into the cached root's /tmp.
  const inRoot = (argv: string[], cwd = inside, env: Record<string, string> = {}) =>
    runInRoot(root, argv, { cwd, env: { TMPDIR: `${inside}/tmp`, ...env }, timeoutMs: TIMEOUT - 10_000 });
  const trexe = (args: string[], argv: string[]) =>
    inRoot(['trexe', `--remote=${remote}`, `--input-root-digest=${rootDigest}`, '--platform-properties=OSFamily=linux,ISA=x86-64', ...args, '--', ...argv]);
  const alive = () => {
    expect(daemon!.running(), `reexec died:\n${daemon!.output()}`).toBe(true);
    expect(daemon!.errorLines()).toEqual([]);
  };

  beforeAll(async () => {
    ({ work, inside } = makeClientsWork(root, 'reexec-buildbox-'));
    daemon = await startDaemonProcess({ dataDir: join(work, 'server') });
    remote = `http://127.0.0.1:${daemon.port}`;
    makeBusyboxSysroot(root, join(work, 'rootfs'));
  });

  afterAll(async () => {
    await daemon?.stop();
    if (work) removeTree(work);
  });

  it(
    'casupload uploads a busybox root filesystem and casdownload brings it back intact',
    async () => {
      const up = await inRoot(['casupload', `--remote=${remote}`, '--output-digest-file=root.digest', 'rootfs']);
      expect(up.code, describeRun('casupload', up)).toBe(0);
      rootDigest = readFileSync(join(work, 'root.digest'), 'utf8').trim();
      expect(rootDigest).toMatch(/^[0-9a-f]{64}\/\d+$/);

      const down = await inRoot(['casdownload', `--remote=${remote}`, `--root-digest=${rootDigest}`, '--destination-dir=copy']);
      expect(down.code, describeRun('casdownload', down)).toBe(0);
      expect(readFileSync(join(work, 'copy', 'usr', 'bin', 'busybox')).equals(readFileSync(join(work, 'rootfs', 'usr', 'bin', 'busybox')))).toBe(true);
      expect(readlinkSync(join(work, 'copy', 'usr', 'bin', 'sh'))).toBe('busybox');
      expect(readlinkSync(join(work, 'copy', 'bin'))).toBe('usr/bin');
      alive();
    },
    TIMEOUT,
  );

  it(
    'trexe runs a command with that input root on reexec and downloads its outputs',
    async () => {
      expect(rootDigest, 'needs the casupload test').toBeTruthy();
      const run = await trexe(
        ['--output-path=out/x', '--d=dl', '--action-result-json=result.json', '--stdout-file=stdout.txt', '--stderr-file=stderr.txt'],
        ['sh', '-c', 'uname -m; echo hi > out/x; echo to-stderr >&2'],
      );
      expect(run.code, describeRun('trexe', run)).toBe(0);
      expect(readFileSync(join(work, 'dl', 'out', 'x'), 'utf8')).toBe('hi\n');
      expect(readFileSync(join(work, 'stdout.txt'), 'utf8')).toBe('x86_64\n');
      expect(readFileSync(join(work, 'stderr.txt'), 'utf8')).toBe('to-stderr\n');
      const result = JSON.parse(readFileSync(join(work, 'result.json'), 'utf8')) as { exitCode?: number; outputFiles: Array<{ path: string }>; executionMetadata?: { worker?: string } };
      expect(result.exitCode ?? 0).toBe(0);
      expect(result.outputFiles.map((f) => f.path)).toEqual(['out/x']);
      expect(result.executionMetadata?.worker).toMatch(/^reexec\//);

      // The same action again: trexe finds it in reexec's action cache and executes nothing.
      rmSync(join(work, 'dl'), { recursive: true });
      const again = await trexe(['--output-path=out/x', '--d=dl'], ['sh', '-c', 'uname -m; echo hi > out/x; echo to-stderr >&2']);
      expect(again.code, describeRun('trexe (cached)', again)).toBe(0);
      expect(readFileSync(join(work, 'dl', 'out', 'x'), 'utf8')).toBe('hi\n');
      const ops = await listOperations(daemon!.port);
      expect(ops.filter((o) => !o.cachedResult && o.exitCode === 0).length, JSON.stringify(ops)).toBe(1);
      expect(ops.length, JSON.stringify(ops)).toBe(1);
      alive();
    },
    TIMEOUT,
  );

  it(
    'trexe: a directory output with nested files, an empty file and a symlink',
    async () => {
      expect(rootDigest, 'needs the casupload test').toBeTruthy();
      const run = await trexe(['--output-path=out', '--d=dl-dir'], ['sh', '-c', 'mkdir -p out/a/b && echo deep > out/a/b/f && : > out/empty && ln -s a/b/f out/link && chmod +x out/a/b/f']);
      expect(run.code, describeRun('trexe', run)).toBe(0);
      const out = join(work, 'dl-dir', 'out');
      expect(readFileSync(join(out, 'a', 'b', 'f'), 'utf8')).toBe('deep\n');
      expect(lstatSync(join(out, 'a', 'b', 'f')).mode & 0o111).not.toBe(0);
      expect(readFileSync(join(out, 'empty'), 'utf8')).toBe('');
      expect(readlinkSync(join(out, 'link'))).toBe('a/b/f');
      alive();
    },
    TIMEOUT,
  );

  it(
    'trexe: a failing command passes its exit code and stderr through; a timeout is reported',
    async () => {
      expect(rootDigest, 'needs the casupload test').toBeTruthy();
      const fail = await trexe(['--stderr-file=fail-stderr.txt'], ['sh', '-c', 'echo failing >&2; exit 3']);
      expect(fail.code, describeRun('trexe (failing)', fail)).toBe(3);
      expect(readFileSync(join(work, 'fail-stderr.txt'), 'utf8')).toBe('failing\n');

      const slow = await trexe(['--exec-timeout=1'], ['sleep', '30']);
      // Not sleep's exit 0 after 30 s: killed at the timeout.
      expect(slow.code, describeRun('trexe (timeout)', slow)).not.toBe(0);
      expect(slow.output, describeRun('trexe (timeout)', slow)).toMatch(/timeout/i);
      alive();
    },
    TIMEOUT,
  );

  it(
    'trexe: a working directory, mtime and mode in and out, a 6 MB file through ByteStream both ways',
    async () => {
      const tree = join(work, 'tree2');
      mkdirSync(join(tree, 'sub'), { recursive: true });
      const big = Buffer.alloc(6_000_000);
      for (let i = 0; i < big.length; i += 4) big.writeUInt32LE((i * 2654435761) >>> 0, i);
      writeFileSync(join(tree, 'sub', 'big.bin'), big);
      writeFileSync(join(tree, 'sub', 'tool'), '#!/bin/sh\necho tool\n', { mode: 0o750 });
      chmodSync(join(tree, 'sub', 'tool'), 0o750);
      const when = new Date('2002-03-04T05:06:07Z');
      utimesSync(join(tree, 'sub', 'tool'), when, when);
      // The busybox root next to the tree, so the action can run sh.
      for (const e of ['usr', 'bin']) cpSync(join(work, 'rootfs', e), join(tree, e), { recursive: true, verbatimSymlinks: true });
      const up = await inRoot(['casupload', `--remote=${remote}`, '--capture-mtime', '--capture-unix-mode', '--output-digest-file=tree2.digest', 'tree2']);
      expect(up.code, describeRun('casupload --capture-mtime --capture-unix-mode', up)).toBe(0);
      const digest = readFileSync(join(work, 'tree2.digest'), 'utf8').trim();

      const run = await inRoot([
        'trexe', `--remote=${remote}`, `--input-root-digest=${digest}`, '--platform-properties=OSFamily=linux,ISA=x86-64',
        '--working-dir=sub', '--output-path=copy.bin', '--output-path=res/info',
        '--output-node-properties=mtime', '--output-node-properties=unix_mode', '--d=dl-props',
        '--', 'sh', '-c', 'mkdir -p res && stat -c "%a %Y" tool > res/info && pwd >> res/info && cp big.bin copy.bin && chmod 640 copy.bin && touch -d "2003-01-01 00:00:00Z" copy.bin',
      ]);
      expect(run.code, describeRun('trexe --working-dir', run)).toBe(0);
      // The input file's mode and mtime were staged; the working directory was sub.
      expect(readFileSync(join(work, 'dl-props', 'res', 'info'), 'utf8')).toBe(`750 ${when.getTime() / 1000}\n/sub\n`);
      const copy = join(work, 'dl-props', 'copy.bin');
      expect(readFileSync(copy).equals(big)).toBe(true);
      // …and the output's mode and mtime came back as node properties.
      expect(lstatSync(copy).mode & 0o777).toBe(0o640);
      expect(lstatSync(copy).mtime.toISOString()).toBe('2003-01-01T00:00:00.000Z');
      alive();
    },
    TIMEOUT,
  );

  it(
    'trexe: more actions at once than reexec has slots: all queue, run and come back right',
    async () => {
      expect(rootDigest, 'needs the casupload test').toBeTruthy();
      const runs = await Promise.all(
        [1, 2, 3, 4, 5, 6].map((i) => trexe(['--output-path=out/x', `--d=par${i}`], ['sh', '-c', `sleep 1; echo ${i} > out/x`])),
      );
      runs.forEach((r, i) => {
        expect(r.code, describeRun(`trexe #${i + 1}`, r)).toBe(0);
        expect(readFileSync(join(work, `par${i + 1}`, 'out', 'x'), 'utf8')).toBe(`${i + 1}\n`);
      });
      alive();
    },
    TIMEOUT,
  );

  it.skipIf(!!reccSkip)(
    `recc compiles C remotely in the host-tools sandbox, then hits the action cache${reccSkip ? ` (${reccSkip})` : ''}`,
    async () => {
      const src = join(work, 'src');
      mkdirSync(join(src, 'include'), { recursive: true });
      // No system headers: the host only needs gcc itself.
      writeFileSync(join(src, 'include', 'answer.h'), '#define ANSWER 42\n');
      writeFileSync(join(src, 'answer.c'), '#include "answer.h"\nint answer(void) { return ANSWER; }\n');
      const env = {
        RECC_SERVER: remote,
        'RECC_REMOTE_PLATFORM_reexec-sandbox': 'host-tools',
        RECC_VERBOSE: '1',
      };
      const compile = () => inRoot(['recc', '/usr/bin/gcc', '-Iinclude', '-c', 'answer.c', '-o', 'answer.o'], `${inside}/src`, env);

      const first = await compile();
      const why = describeRun('recc gcc -c answer.c', first);
      expect(first.code, why).toBe(0);
      expect(first.output, why).toMatch(/Executing action remotely/);
      expect(first.output, why).toMatch(/Remote execution finished with exit code 0/);
      // Compiled by the host's gcc through reexec, not the clients root's own (newer) gcc.
      const object = readFileSync(join(src, 'answer.o'));
      expect(object.subarray(0, 4).toString('latin1')).toBe('\x7fELF');
      expect(object.toString('latin1')).toContain(`GCC: ${hostGcc.replace(/^\S+ /, '')}`);
      const ops = await listOperations(daemon!.port);
      expect(ops.some((o) => !o.cachedResult && o.exitCode === 0 && o.done), JSON.stringify(ops)).toBe(true);

      rmSync(join(src, 'answer.o'));
      const second = await compile();
      expect(second.code, describeRun('recc (second)', second)).toBe(0);
      expect(second.output, describeRun('recc (second)', second)).toMatch(/Action Cache hit/);
      expect(existsSync(join(src, 'answer.o'))).toBe(true);

      // The project root above the working directory (inputs from ../include), outputs in a
      // subdirectory that does not exist yet, and a second output (-MD).
      mkdirSync(join(work, 'proj', 'src', 'lib'), { recursive: true });
      mkdirSync(join(work, 'proj', 'include'));
      writeFileSync(join(work, 'proj', 'include', 'v.h'), '#define V 7\n');
      writeFileSync(join(work, 'proj', 'src', 'lib', 'v.c'), '#include "v.h"\nint v(void) { return V; }\n');
      const nested = await inRoot(
        ['recc', '/usr/bin/gcc', '-I../include', '-MD', '-MF', 'obj/v.d', '-c', 'lib/v.c', '-o', 'obj/v.o'],
        `${inside}/proj/src`,
        { ...env, RECC_PROJECT_ROOT: `${inside}/proj` },
      );
      expect(nested.code, describeRun('recc (project root above cwd)', nested)).toBe(0);
      expect(nested.output, describeRun('recc (project root above cwd)', nested)).toMatch(/Remote execution finished with exit code 0/);
      expect(readFileSync(join(work, 'proj', 'src', 'obj', 'v.o')).toString('latin1')).toContain(`GCC: ${hostGcc.replace(/^\S+ /, '')}`);
      expect(readFileSync(join(work, 'proj', 'src', 'obj', 'v.d'), 'utf8')).toMatch(/^obj\/v\.o: lib\/v\.c .*\.\.\/include\/v\.h/s);

      // A compile error comes back as the remote gcc's exit code and diagnostics.
      writeFileSync(join(src, 'broken.c'), 'int broken(void) { return undeclared_name; }\n');
      const broken = await inRoot(['recc', '/usr/bin/gcc', '-c', 'broken.c', '-o', 'broken.o'], `${inside}/src`, env);
      expect(broken.code, describeRun('recc (broken)', broken)).not.toBe(0);
      expect(broken.output, describeRun('recc (broken)', broken)).toMatch(/Executing action remotely/);
      expect(broken.output, describeRun('recc (broken)', broken)).toMatch(/undeclared_name.*undeclared/);
      alive();
    },
    TIMEOUT,
  );
});
