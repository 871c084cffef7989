import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call } from '../../src/client/reapi-client.js';
import { treeFromDirectory, type LocalTree } from '../../src/client/merkle.js';
import { Digest } from '../../src/digest/digest.js';
import { re } from '../../src/proto.js';
import { findBubblewrap } from '../../src/runner/bubblewrap-runner.js';
import { BUSYBOX, buildStreamReadOnlyRoot, makeBusyboxRoot } from '../helpers/busybox-root.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { execute, readBlob, uploadAction, uploadTree, type ActionSpec } from '../helpers/exec-client.js';
import { caseTally } from './tally.js';

const missing = !BUSYBOX ? 'busybox-static (apt-get install busybox-static)' : !findBubblewrap() ? 'bubblewrap (apt-get install bubblewrap)' : undefined;

/**
 * Actions that try to get out of the sandbox: read host files, write where they must not,
 * reach the network or the daemon, see or signal host processes. Each case prints a marker
 * only if the escape worked; the assertions check no marker appears and nothing changed on
 * the host.
 */
describe.skipIf(missing)(`sandbox escape attempts${missing ? ` (skipped: install ${missing})` : ''}`, () => {
  const tally = caseTally('sandbox escapes');
  let d: TestDaemon;
  let hostRoot: string;
  let tree: LocalTree;
  /** A directory on the host, outside every input root, with a secret in it. */
  let hostDir: string;
  let secret: string;
  let port: number;
  /** A host directory that only a symlink-following mkdir would create things in. */
  let victimDir: string;
  const victimContent = 'read-only input, must stay as it is\n';

  beforeAll(async () => {
    // Under the data dir's parent is the usual place; anywhere outside the input root will do.
    hostDir = mkdtempSync(join('/var/tmp', 'reexec-host-'));
    secret = `host-secret-${randomBytes(12).toString('hex')}`;
    writeFileSync(join(hostDir, 'secret.txt'), secret + '\n');
    victimDir = join(hostDir, 'victim');
    mkdirSync(victimDir);
    d = await startTestDaemon((c) => {
      // A unix socket outside /tmp and /run: the host-tools sandbox must not expose it.
      c.listen = ['127.0.0.1:0', `unix:${join(hostDir, 'daemon.sock')}`];
    });
    port = Number(d.address.slice(d.address.lastIndexOf(':') + 1));
    hostRoot = makeBusyboxRoot((root) => {
      mkdirSync(join(root, 'ro'));
      writeFileSync(join(root, 'ro', 'victim.txt'), victimContent);
      symlinkSync(hostDir, join(root, 'work', 'esc-abs'));
      symlinkSync('../'.repeat(12) + hostDir.slice(1), join(root, 'work', 'esc-rel'));
      symlinkSync(victimDir, join(root, 'work', 'esc-victim'));
      symlinkSync('loop-b', join(root, 'work', 'loop-a'));
      symlinkSync('loop-a', join(root, 'work', 'loop-b'));
      symlinkSync('self', join(root, 'work', 'self'));
    });
    tree = await treeFromDirectory(hostRoot, {
      directoryProperties: buildStreamReadOnlyRoot,
    });
    await uploadTree(d.clients, tree);
  });
  afterAll(async () => {
    await d?.stop();
    if (hostRoot) rmSync(hostRoot, { recursive: true, force: true });
    if (hostDir) rmSync(hostDir, { recursive: true, force: true });
  });

  const run = async (script: string, spec: Partial<ActionSpec> = {}): Promise<{ stdout: string; stderr: string; result: re.IActionResult }> => {
    const action = await uploadAction(d.clients, tree.root, { args: ['sh', '-c', script], workingDirectory: 'work', doNotCache: true, ...spec });
    const { response, error } = await execute(d.clients, action);
    expect(error, error?.details).toBeUndefined();
    expect(response!.status?.code ?? 0, response!.status?.message ?? undefined).toBe(0);
    const result = response!.result!;
    return { stdout: (await readBlob(d.clients, result.stdoutDigest)).toString(), stderr: (await readBlob(d.clients, result.stderrDigest)).toString(), result };
  };

  /** The secret never reached the CAS, whatever the action did. */
  const secretNotInCas = async (): Promise<void> => {
    const digest = Digest.compute(Buffer.from(secret + '\n'));
    const res: any = await call(d.clients.cas, 'FindMissingBlobs', { blobDigests: [digest.toProto()] });
    expect(res.missingBlobDigests.map((x: re.IDigest) => x.hash)).toContain(digest.hash);
  };

  it('cannot read a host file outside the input root, directly or through symlinks', async () => {
    const attempts = [
      `cat ${hostDir}/secret.txt`,
      'cat esc-abs/secret.txt',
      'cat esc-rel/secret.txt',
      `cat /proc/1/root${hostDir}/secret.txt`,
      `cat /proc/self/root${hostDir}/secret.txt`,
      `ln -s ${hostDir} /work/mine && cat /work/mine/secret.txt`,
      `cd / && cd .. && cd .. && cat .${hostDir}/secret.txt`,
      `find / -name 'secret*' -exec cat {} \\; 2>/dev/null`,
      `chroot / cat ${hostDir}/secret.txt`,
    ];
    tally.add(attempts.length);
    const { stdout } = await run(attempts.map((a) => `(${a}) 2>/dev/null`).join('; ') + '; echo done');
    expect(stdout).not.toContain(secret);
    expect(stdout).toContain('done');
  });

  it('never follows symlinks (inputs or made by the action) out of the root when collecting outputs', async () => {
    const outputs = [
      'esc-abs/secret.txt',
      'esc-rel/secret.txt',
      'made-abs/secret.txt',
      'made-rel/secret.txt',
      'made-up/secret.txt',
      'loop-a/x',
      'self/x',
      'made-loop/x',
      'esc-abs',
      'made-dir',
      'hard',
    ];
    tally.add(outputs.length);
    const { result } = await run(
      [
        `ln -s ${hostDir} made-abs`,
        `ln -s ${'../'.repeat(12)}${hostDir.slice(1)} made-rel`,
        `mkdir -p sub && ln -s ../${'../'.repeat(12)}${hostDir.slice(1)} made-up-target && ln -s made-up-target made-up`,
        'ln -s made-loop made-loop',
        `mkdir made-dir && ln -s ${hostDir}/secret.txt made-dir/s && ln -s ../esc-abs made-dir/d`,
        `ln ${hostDir}/secret.txt hard 2>/dev/null || true`,
      ].join('; '),
      { outputPaths: outputs },
    );
    expect(result.outputFiles ?? []).toEqual([]);
    // Symlinks are reported as symlinks, their targets untouched.
    const links = Object.fromEntries((result.outputSymlinks ?? []).map((s) => [s.path, s.target]));
    expect(links['esc-abs']).toBe(hostDir);
    const dir = (result.outputDirectories ?? []).find((o) => o.path === 'made-dir')!;
    const treeMsg = re.Tree.decode(await readBlob(d.clients, dir.treeDigest));
    expect(treeMsg.root!.files ?? []).toEqual([]);
    expect((treeMsg.root!.symlinks ?? []).map((s) => s.name)).toEqual(['d', 's']);
    expect((result.outputDirectories ?? []).map((o) => o.path)).toEqual(['made-dir']);
    await secretNotInCas();
  });

  it('creates parents of output paths inside the root only, never through an input symlink', async () => {
    const outputs = ['esc-victim/created/file', 'esc-victim/x', 'esc-abs/victim/deep/er/file'];
    tally.add(outputs.length);
    await run('true', { outputPaths: outputs });
    expect(readdirSync(victimDir)).toEqual([]);
    expect(readdirSync(hostDir).sort()).toEqual(['daemon.sock', 'secret.txt', 'victim']);
  });

  it('has no network without network=on: not even the daemon on 127.0.0.1', async () => {
    tally.add(3);
    const probe = `echo | nc -w 2 127.0.0.1 ${port} >/dev/null 2>&1 && echo CONNECTED; wget -q -T 2 -O /dev/null http://127.0.0.1:${port}/ 2>&1 | grep -qi 'refused\\|unreachable\\|timed out\\|bad address' || echo WGET-ANSWERED; cat /proc/net/tcp | tail -n +2 | wc -l`;
    const isolated = await run(probe);
    expect(isolated.stdout).not.toContain('CONNECTED');
    expect(isolated.stdout.trim().split('\n').pop()).toBe('0');
    // The same probe with network=on reaches the daemon: the check above can see an escape.
    const open = await run(probe, { platform: [['OSFamily', 'linux'], ['network', 'on']] });
    expect(open.stdout).toContain('CONNECTED');
  });

  it('cannot write into the store or the directory cache through read-only inputs', async () => {
    const attempts = [
      'echo evil >> /ro/victim.txt',
      'echo evil > /ro/victim.txt',
      'chmod 666 /ro/victim.txt',
      'rm -f /ro/victim.txt',
      'mv /ro/victim.txt /work/moved',
      'ln /ro/victim.txt /work/hl && echo evil >> /work/hl',
      'touch -d @0 /ro/victim.txt',
      'truncate -s 0 /ro/victim.txt',
      `ls ${d.dataDir} && echo SEES-DATA-DIR`,
      'mount -t tmpfs none /ro && echo MOUNTED',
      'umount /ro && echo UNMOUNTED',
      'mount -o remount,rw /ro && echo REMOUNTED',
    ];
    tally.add(attempts.length);
    const { stdout } = await run(attempts.map((a) => `(${a}) 2>/dev/null`).join('; ') + '; echo done');
    expect(stdout).not.toMatch(/SEES-DATA-DIR|MOUNTED|UNMOUNTED|REMOUNTED/);
    // The input, the CAS blob and the cache file are all unchanged.
    const again = await run('cat /ro/victim.txt; stat -c %s /ro/victim.txt');
    expect(again.stdout).toBe(victimContent + `${victimContent.length}\n`);
    const blob = Digest.compute(Buffer.from(victimContent));
    const res: any = await call(d.clients.cas, 'BatchReadBlobs', { digests: [blob.toProto()] });
    expect(Buffer.from(res.responses[0].data).toString()).toBe(victimContent);
    const cacheFiles = join(d.dataDir, 'cache', 'files', blob.hash.slice(0, 2));
    for (const f of existsSync(cacheFiles) ? readdirSync(cacheFiles).filter((n) => n.includes(blob.hash)) : []) {
      expect(readFileSync(join(cacheFiles, f), 'utf8')).toBe(victimContent);
    }
  });

  it('cannot see, signal or trace the daemon or other host processes', async () => {
    const pid = process.pid;
    const attempts = [
      `kill -0 ${pid} && echo CAN-SIGNAL`,
      `test -e /proc/${pid} && echo SEES-DAEMON`,
      `cat /proc/${pid}/cmdline && echo READS-DAEMON`,
      'nsenter -t 1 -m -n -p true && echo NSENTER',
      'unshare -U true && echo NESTED-USERNS',
      'unshare -n true && echo NEW-NETNS',
      'mknod /work/dev-null c 1 3 && echo MKNOD',
      'echo 1 > /proc/sys/kernel/sysrq && echo SYSCTL',
      'hostname evil && hostname | grep -q evil && echo SETS-HOSTNAME-VISIBLE-ON-HOST',
    ];
    tally.add(attempts.length + 2);
    const { stdout } = await run(
      attempts.map((a) => `(${a}) 2>/dev/null`).join('; ') + "; echo procs=$(ls /proc | grep -c '^[0-9]'); grep CapEff /proc/self/status",
    );
    if (pid > 50) expect(stdout).not.toMatch(/CAN-SIGNAL|SEES-DAEMON|READS-DAEMON/);
    expect(stdout).not.toMatch(/NSENTER|NESTED-USERNS|NEW-NETNS|MKNOD|SYSCTL/);
    // bwrap (pid 1), sh, and the subshells of this script: a handful, never the host's.
    const procs = Number(/procs=(\d+)/.exec(stdout)![1]);
    expect(procs).toBeLessThan(6);
    expect(stdout).toMatch(/CapEff:\s*0+\s*$/m);
    // The hostname change stayed in the sandbox's UTS namespace.
    expect((await import('node:os')).hostname()).not.toBe('evil');
  });

  it('host-tools sandbox: the data dir, /run and the daemon\'s unix socket are hidden', async () => {
    const host = [['OSFamily', 'linux'], ['reexec-sandbox', 'host-tools']] as Array<[string, string]>;
    const attempts = [
      `ls -A ${d.dataDir} | grep -q . && echo SEES-DATA-DIR`,
      `test -S ${hostDir}/daemon.sock && echo SEES-SOCKET`,
      'ls -A /run | grep -q . && echo SEES-RUN',
      `echo | nc -w 2 127.0.0.1 ${port} >/dev/null 2>&1 && echo CONNECTED`,
    ];
    tally.add(attempts.length);
    const action = await uploadAction(d.clients, tree.root, {
      args: ['/bin/sh', '-c', attempts.map((a) => `(${a}) 2>/dev/null`).join('; ') + '; echo done'],
      platform: host,
      doNotCache: true,
    });
    const { response } = await execute(d.clients, action);
    expect(response!.result!.exitCode, (await readBlob(d.clients, response!.result!.stderrDigest)).toString()).toBe(0);
    const stdout = (await readBlob(d.clients, response!.result!.stdoutDigest)).toString();
    expect(stdout).toBe('done\n');
  });
});
