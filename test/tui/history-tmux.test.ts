import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '../../src/client/reapi-client.js';
import { findBubblewrap } from '../../src/runner/bubblewrap-runner.js';
import { hostIsa } from '../../src/scheduler/platform.js';
import { shAction, uploadBusyboxRoot } from '../helpers/action-batch.js';
import { BUSYBOX } from '../helpers/busybox-root.js';
import { REPO_ROOT, startDaemonProcess, type DaemonProcess } from '../helpers/daemon-process.js';
import { execute } from '../helpers/exec-client.js';

const hasTmux = spawnSync('sh', ['-c', 'command -v tmux'], { stdio: 'ignore' }).status === 0;
const missing = !hasTmux ? 'tmux' : !BUSYBOX ? 'busybox-static' : !findBubblewrap() ? 'bubblewrap' : undefined;
if (missing && process.env.CI) throw new Error(`the History view's tmux test needs ${missing} under CI`);

let socket = '';
const tmux = (...args: string[]): string => execFileSync('tmux', ['-S', socket, '-f', '/dev/null', ...args], { encoding: 'utf8' });
/** The screen as text; with colours, as the terminal's escape sequences. */
const screen = (colours = false): string => tmux('capture-pane', '-p', ...(colours ? ['-e'] : []), '-t', 'hist').replace(/\n$/, '');
const keys = (...k: string[]): void => void tmux('send-keys', '-t', 'hist', ...k);

async function waitForScreen(what: string, ok: (text: string) => boolean, timeoutMs = 30_000, target = 'hist'): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let text = '';
  while (Date.now() < deadline) {
    text = tmux('capture-pane', '-p', '-t', target).replace(/\n$/, '');
    if (ok(text)) return text;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`the terminal never showed ${what}; the screen was:\n${text}`);
}

describe.skipIf(missing)(`the History view of reexec status in a real terminal (tmux)${missing ? ` (skipped: install ${missing})` : ''}`, () => {
  let d: DaemonProcess;
  let clients: ReturnType<typeof connect>;
  let dir: string;
  let hostRoot: string;
  const actions: string[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'reexec-history-tmux-'));
    socket = join(dir, 'tmux.sock');
    writeFileSync(join(dir, 'config.yaml'), `metrics:\n  listen: off\nexecution:\n  pools:\n    - name: native\n      isa: ${hostIsa()}\n      slots: 2\n`);
    d = await startDaemonProcess({ args: ['--config', join(dir, 'config.yaml')] });
    clients = connect(d.address);
    const up = await uploadBusyboxRoot(clients);
    hostRoot = up.hostRoot;
    for (const script of ['echo first-ok', 'echo "tmux-history-boom on stderr" >&2; exit 4', 'echo last-ok']) {
      const a = await shAction(clients, up.tree.root, script);
      actions.push(a.toString());
      await execute(clients, a);
    }
    const command = `env -u CI -u CONTINUOUS_INTEGRATION TERM=xterm-256color ${process.execPath} ${join(REPO_ROOT, 'bin', 'run.js')} status --endpoint ${d.address}; echo "EXITED $?"; sleep 600`;
    tmux('new-session', '-d', '-s', 'hist', '-x', '100', '-y', '30', command);
  });

  afterAll(async () => {
    if (socket) spawnSync('tmux', ['-S', socket, 'kill-server'], { stdio: 'ignore' });
    clients?.close();
    await d?.stop();
    if (hostRoot) rmSync(hostRoot, { recursive: true, force: true });
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('lists the actions, failures in red, the selected one with its stderr; keys in the footer', async () => {
    await waitForScreen('the dashboard', (t) => t.includes('native-0 idle'));
    keys('4');
    const list = await waitForScreen('three actions', (t) => /✓ ran .*sh -c echo last-ok/.test(t) && /✗ exit 4 .*tmux-history-boom/.test(t) && /✓ ran .*sh -c echo first-ok/.test(t));
    const lines = list.split('\n');
    expect(lines).toHaveLength(30);
    expect(lines[1]).toMatch(/^ 1 Workers {2}2 Queue {2}3 Cache {2}4 History +tab\/1-4 view · p pause · q quit$/);
    expect(lines[3]).toMatch(/^TIME +RESULT +TOOK +ACTION +WHAT/);
    expect(lines[4]).toMatch(/^\d\d:\d\d:\d\d +✓ ran +\S+ +[0-9a-f]{12} +sh -c echo last-ok/);
    expect(lines[5]).toMatch(/^\d\d:\d\d:\d\d +✗ exit 4 +\S+ +[0-9a-f]{12} +sh -c echo "tmux-history-boom on stderr" >&2; exit 4/);
    expect(lines.at(-3)).toMatch(/^↑↓\/j k select · g newest · f failed only · 1\/3$/);
    // The failure in red (SGR 31); the selected row in reverse video (SGR 7).
    const coloured = screen(true).split('\n');
    expect(coloured[5]).toMatch(/\u001b\[[0-9;]*31[;m]/);
    expect(coloured[4]).toMatch(/\u001b\[[0-9;]*7[;m]/);

    keys('Down');
    const failed = await waitForScreen('the failure selected, with its stderr', (t) => t.includes('stderr (') && t.includes('  tmux-history-boom on stderr'));
    expect(failed).toMatch(/✗ exit 4 · \d\d:\d\d:\d\d · on reexec\/native-\d/);
    expect(failed).toContain(`$ sh -c 'echo "tmux-history-boom on stderr" >&2; exit 4'`);
    expect(failed.split('\n').at(-3)).toMatch(/ · 2\/3$/);

    keys('f');
    const only = await waitForScreen('failures only', (t) => t.includes('(failed only)') && / · 1\/1$/.test(t.split('\n').at(-3) ?? ''));
    expect(only).not.toContain('last-ok');
    expect(only.split('\n').at(-3)).toMatch(/f every action · 1\/1$/);

    keys('q');
    const after = await waitForScreen('the command to exit', (t) => t.includes('EXITED'));
    expect(after).toContain('EXITED 0');
  });

  it('reexec shell opens an interactive sh in the sandbox: job control, Ctrl-C for what runs inside, its exit status', async () => {
    const command = `env -u CI -u CONTINUOUS_INTEGRATION TERM=xterm-256color ${process.execPath} ${join(REPO_ROOT, 'bin', 'run.js')} shell ${actions[0]} --endpoint ${d.address}; echo "EXITED $?"; sleep 600`;
    tmux('new-session', '-d', '-s', 'shell', '-x', '100', '-y', '30', command);
    const sh = (...k: string[]): void => void tmux('send-keys', '-t', 'shell', ...k);
    // (tmux drops the spaces at the ends of lines: the prompt ends "/ #".)
    await waitForScreen('the prompt', (t) => /^\[reexec shell [0-9a-f]{12}\] \/ #$/m.test(t), 30_000, 'shell');
    sh('echo $((6*7)) in $(pwd) as $(id -u); ls /proc/1/exe >/dev/null && echo own-pid-namespace', 'Enter');
    await waitForScreen('the answer', (t) => t.includes('42 in / as 0') && t.includes('own-pid-namespace'), 30_000, 'shell');
    sh('sleep 300', 'Enter');
    await waitForScreen('sleep running', (t) => /# sleep 300\n?$/.test(t.trimEnd()), 30_000, 'shell');
    sh('C-c');
    sh('echo still-here', 'Enter');
    await waitForScreen('the shell back after Ctrl-C', (t) => /^still-here$/m.test(t), 30_000, 'shell');
    sh('exit 3', 'Enter');
    const after = await waitForScreen('the exit status', (t) => t.includes('EXITED'), 30_000, 'shell');
    expect(after).toContain('EXITED 3');
  });
});
