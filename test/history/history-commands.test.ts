import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LocalTree } from '../../src/client/merkle.js';
import { connect } from '../../src/client/reapi-client.js';
import type { Digest } from '../../src/digest/digest.js';
import type { HistoryEntry } from '../../src/history/entry.js';
import { findBubblewrap } from '../../src/runner/bubblewrap-runner.js';
import { uploadBusyboxRoot } from '../helpers/action-batch.js';
import { BUSYBOX } from '../helpers/busybox-root.js';
import { REEXEC_BIN, startDaemonProcess, type DaemonProcess } from '../helpers/daemon-process.js';
import { execute, uploadAction } from '../helpers/exec-client.js';

const missing = !BUSYBOX ? 'busybox-static' : !findBubblewrap() ? 'bubblewrap' : undefined;

/** `reexec ARGS` as a user runs it, without a terminal or a config of the user's. */
const reexec = (args: string[], env: Record<string, string> = {}) =>
  execa(process.execPath, [REEXEC_BIN, ...args], { reject: false, timeout: 60_000, env: { CI: '', XDG_CONFIG_HOME: join(tmpdir(), 'reexec-no-config'), ...env } });

describe.skipIf(missing)(`reexec history, show, explain and shell${missing ? ` (skipped: install ${missing})` : ''}`, () => {
  let d: DaemonProcess;
  let clients: ReturnType<typeof connect>;
  let tree: LocalTree;
  let hostRoot: string;
  let dir: string;
  let ok: Digest;
  let bad: Digest;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'reexec-history-cmd-'));
    writeFileSync(join(dir, 'daemon.yaml'), 'metrics:\n  listen: off\nexecution:\n  pools: [{name: native, isa: x86-64, slots: 2}]\n');
    d = await startDaemonProcess({ args: ['--config', join(dir, 'daemon.yaml')] });
    clients = connect(d.address);
    ({ tree, hostRoot } = await uploadBusyboxRoot(clients));
    writeFileSync(join(hostRoot, 'work', 'input.txt'), 'an input of the action\n');
    const { treeFromDirectory } = await import('../../src/client/merkle.js');
    const { uploadTree } = await import('../helpers/exec-client.js');
    tree = await treeFromDirectory(hostRoot);
    await uploadTree(clients, tree);
    ok = await uploadAction(clients, tree.root, { args: ['sh', '-c', 'cat input.txt > copy.txt'], workingDirectory: 'work', outputPaths: ['copy.txt'] });
    bad = await uploadAction(clients, tree.root, { args: ['sh', '-c', 'echo "compiling…"; echo "error: no such thing" >&2; exit 2'], workingDirectory: 'work' });
    expect((await execute(clients, ok)).response?.result?.exitCode).toBe(0);
    expect((await execute(clients, bad)).response?.result?.exitCode).toBe(2);
  });

  afterAll(async () => {
    clients?.close();
    await d?.stop();
    if (hostRoot) rmSync(hostRoot, { recursive: true, force: true });
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('history prints a table newest first; --failed, --json (one object per line)', async () => {
    const r = await reexec(['history', '--endpoint', d.address]);
    expect(r.exitCode, r.stderr).toBe(0);
    const lines = r.stdout.split('\n');
    expect(lines[0]).toMatch(/^TIME +RESULT +TOOK +ACTION +WHAT$/);
    expect(lines[1]).toMatch(new RegExp(`^\\d\\d:\\d\\d:\\d\\d  ✗ exit 2 +\\S+  ${bad.hash.slice(0, 12)}  sh -c echo "compiling…"`));
    expect(lines[2]).toMatch(new RegExp(`^\\d\\d:\\d\\d:\\d\\d  ✓ ran +\\S+  ${ok.hash.slice(0, 12)}  sh -c cat input.txt > copy.txt$`));

    const failed = await reexec(['history', '--endpoint', d.address, '--failed', '--json']);
    expect(failed.exitCode, failed.stderr).toBe(0);
    const entries = failed.stdout.trim().split('\n').map((l) => JSON.parse(l) as HistoryEntry);
    expect(entries).toHaveLength(1);
    expect(entries[0]).toMatchObject({ kind: 'execute', outcome: 'ran', action: bad.toString(), exitCode: 2, failed: true, workingDirectory: 'work' });

    const none = await reexec(['history', '--endpoint', d.address, '--tool', 'bazel']);
    expect(none.stdout).toContain('No recorded action matches these filters.');
    const badSince = await reexec(['history', '--endpoint', d.address, '--since', 'yesterday-ish']);
    expect(badSince.exitCode).toBe(2);
    expect(badSince.stderr).toContain('--since "yesterday-ish" is neither a duration');
  });

  it('history --watch --json prints the last entries, then each new one as it is recorded', async () => {
    const watch = execa(process.execPath, [REEXEC_BIN, 'history', '--watch', '--json', '--limit', '1', '--endpoint', d.address], { reject: false, env: { CI: '' } });
    const lines: HistoryEntry[] = [];
    let buf = '';
    const seen = (n: number): Promise<void> =>
      new Promise((resolve, reject) => {
        const check = (): void => void (lines.length >= n && resolve());
        watch.stdout!.on('data', (c: Buffer) => {
          buf += c.toString();
          let nl: number;
          while ((nl = buf.indexOf('\n')) >= 0) {
            lines.push(JSON.parse(buf.slice(0, nl)) as HistoryEntry);
            buf = buf.slice(nl + 1);
          }
          check();
        });
        void watch.then((r) => reject(new Error(`history --watch ended: ${r.exitCode} ${r.stderr}`)));
        check();
      });
    try {
      await seen(1);
      expect(lines[0]!.action).toBe(bad.toString()); // the newest so far
      const next = await uploadAction(clients, tree.root, { args: ['sh', '-c', 'echo watched'], workingDirectory: 'work' });
      await execute(clients, next);
      await seen(2);
      expect(lines[1]).toMatchObject({ action: next.toString(), kind: 'execute', outcome: 'ran', exitCode: 0 });
    } finally {
      watch.kill('SIGINT');
      const r = await watch;
      expect(r.exitCode).toBe(0); // interrupted: ends the watch cleanly
    }
  });

  it('show prints the command, the input root, and the end of stderr; --stderr the whole stream', async () => {
    const r = await reexec(['show', bad.hash.slice(0, 10), '--endpoint', d.address]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^action +[0-9a-f]{64}\/\d+ \(sha256\) · operations\//);
    expect(r.stdout).toMatch(/^result +✗ exit 2 · \d\d:\d\d:\d\d · on reexec\/native-\d$/m);
    expect(r.stdout).toContain(`command     sh -c 'echo "compiling…"; echo "error: no such thing" >&2; exit 2'`);
    expect(r.stdout).toContain('working dir work');
    expect(r.stdout).toMatch(/^input root +[0-9a-f]{64}\/\d+: \d+ files, \d+ directories, \d+ symlinks, [\d.]+ (KiB|MiB)$/m);
    expect(r.stdout).toMatch(/^ +[\d.]+ MiB  usr\/bin\/busybox$/m);
    expect(r.stdout).toMatch(/^stderr \(21 B\):\n {2}error: no such thing$/m);
    expect(r.stdout).toMatch(/^stdout \(\d+ B\):\n {2}compiling…$/m);
    const stderr = await reexec(['show', bad.toString(), '--stderr', '--endpoint', d.address]);
    expect(stderr.stdout).toBe('error: no such thing');
    const json = await reexec(['show', bad.toString(), '--json', '--endpoint', d.address]);
    const parsed = JSON.parse(json.stdout) as { command: { arguments: string[] }; stderr: { tail: string }; result: { exitCode: number } };
    expect(parsed.command.arguments[0]).toBe('sh');
    expect(parsed.stderr.tail).toBe('error: no such thing\n');
    expect(parsed.result.exitCode).toBe(2);
  });

  it('unknown actions: exit 2 and what the history keeps', async () => {
    const r = await reexec(['show', 'abcdef123456', '--endpoint', d.address]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain('no action whose hash starts with abcdef123456 is in the action history');
    expect(r.stderr).toContain('history.keep-failed');
    const j = await reexec(['explain', 'abcdef123456', '--json', '--endpoint', d.address]);
    expect(j.exitCode).toBe(2);
    expect((JSON.parse(j.stdout) as { error: { message: string } }).error.message).toContain('abcdef123456');
    const down = await reexec(['history', '--endpoint', '127.0.0.1:1']);
    expect(down.exitCode).toBe(3);
    expect(down.stderr).toContain('Is the daemon running?');
  });

  it('explain names the differences from a given action', async () => {
    const r = await reexec(['explain', bad.toString(), '--against', ok.toString(), '--endpoint', d.address]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toContain(`with        ${ok.toString()}`);
    expect(r.stdout).toMatch(/^arguments:\n {2}- \[2\] 'cat input\.txt > copy\.txt'\n {2}\+ \[2\] 'echo "compiling…"/m);
    expect(r.stdout).toMatch(/^action and command fields:\n {2}~ output_paths: copy\.txt → $/m);
  });

  it('shell -- CMD runs in the action\'s sandbox: its inputs, its working directory, nothing left behind', async () => {
    const tmp = mkdtempSync(join(tmpdir(), 'reexec-shell-test-'));
    try {
      const r = await reexec(['shell', ok.hash.slice(0, 12), '--endpoint', d.address, '--tmp-dir', tmp, '--', 'sh', '-c', 'cat input.txt; pwd; id -u; ls /proc/self >/dev/null && echo procfs; touch /work/new && echo writable']);
      expect(r.exitCode, r.stderr).toBe(0);
      expect(r.stdout).toBe('an input of the action\n/work\n0\nprocfs\nwritable');
      expect(r.stderr).toMatch(/reexec shell: staging the input root of [0-9a-f]{64}\/\d+ \(\d+ files/);
      const { readdirSync } = await import('node:fs');
      expect(readdirSync(tmp)).toEqual([]);
      const code = await reexec(['shell', ok.toString(), '--endpoint', d.address, '--', 'sh', '-c', 'exit 5']);
      expect(code.exitCode).toBe(5);
      // Nothing of what ran in the shell reached the store.
      const again = await reexec(['show', ok.toString(), '--json', '--endpoint', d.address]);
      expect((JSON.parse(again.stdout) as { inputRoot: { digest: string } }).inputRoot.digest).toBe(tree.root.toString());
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });

  it('shell without bubblewrap says what is missing and how to install it', async () => {
    const r = await reexec(['shell', ok.toString(), '--endpoint', d.address, '--', 'true'], { PATH: '/nonexistent' });
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain('bubblewrap (bwrap) is not installed here');
    expect(r.stderr).toContain('sudo apt-get install -y bubblewrap');
  });
});
