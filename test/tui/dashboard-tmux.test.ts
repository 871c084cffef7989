import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, connect } from '../../src/client/reapi-client.js';
import type { LocalTree } from '../../src/client/merkle.js';
import type { Digest } from '../../src/digest/digest.js';
import { findBubblewrap } from '../../src/runner/bubblewrap-runner.js';
import { hostIsa } from '../../src/scheduler/platform.js';
import { executeAll, shAction, uploadBusyboxRoot } from '../helpers/action-batch.js';
import { BUSYBOX } from '../helpers/busybox-root.js';
import { REPO_ROOT, startDaemonProcess, type DaemonProcess } from '../helpers/daemon-process.js';
import { digestOf } from '../helpers/storage.js';

const hasTmux = spawnSync('sh', ['-c', 'command -v tmux'], { stdio: 'ignore' }).status === 0;
const missing = !hasTmux ? 'tmux' : !BUSYBOX ? 'busybox-static' : !findBubblewrap() ? 'bubblewrap' : undefined;

/** A private tmux server whose socket lives in the test's temporary dir: nothing of the user's is touched. */
let socket = '';
const tmux = (...args: string[]): string => execFileSync('tmux', ['-S', socket, '-f', '/dev/null', ...args], { encoding: 'utf8' });
const screen = (): string => tmux('capture-pane', '-p', '-t', 'dash').replace(/\n$/, '');
const keys = (...k: string[]): void => void tmux('send-keys', '-t', 'dash', ...k);

async function waitForScreen(what: string, ok: (text: string) => boolean, timeoutMs = 20_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let text = '';
  while (Date.now() < deadline) {
    text = screen();
    if (ok(text)) return text;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`the dashboard never showed ${what}; the screen was:\n${text}`);
}

/** REEXEC_TUI_SCREENS=DIR keeps what the terminal showed at each step, to look at. */
function keep(name: string, text: string): void {
  const dir = process.env.REEXEC_TUI_SCREENS;
  if (dir) writeFileSync(join(dir, `${name}.txt`), text + '\n');
}

const count = (text: string, re: RegExp): number => (text.match(new RegExp(re.source, 'gm')) ?? []).length;

describe.skipIf(missing)(`reexec status in a real terminal (tmux)${missing ? ` (skipped: install ${missing})` : ''}`, () => {
  let d: DaemonProcess;
  let clients: ReturnType<typeof connect>;
  let dir: string;
  let tree: LocalTree;
  let hostRoot: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'reexec-tmux-'));
    socket = join(dir, 'tmux.sock');
    writeFileSync(join(dir, 'config.yaml'), `metrics:\n  listen: off\nexecution:\n  pools:\n    - name: native\n      isa: ${hostIsa()}\n      slots: 2\n`);
    d = await startDaemonProcess({ args: ['--config', join(dir, 'config.yaml')] });
    clients = connect(d.address);
    ({ tree, hostRoot } = await uploadBusyboxRoot(clients));
    // CI=true would make ink print only the last frame: the dashboard runs as on a desk.
    const command = `env -u CI -u CONTINUOUS_INTEGRATION TERM=xterm-256color ${process.execPath} ${join(REPO_ROOT, 'bin', 'run.js')} status --endpoint ${d.address}; echo "EXITED $?"; sleep 600`;
    tmux('new-session', '-d', '-s', 'dash', '-x', '80', '-y', '24', command);
  });

  afterAll(async () => {
    if (socket) spawnSync('tmux', ['-S', socket, 'kill-server'], { stdio: 'ignore' });
    clients?.close();
    await d?.stop();
    if (hostRoot) rmSync(hostRoot, { recursive: true, force: true });
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('shows a batch of actions running, then finished, in 80×24, and answers its keys', async () => {
    const idle = await waitForScreen('two idle slots', (t) => t.includes('native-0 idle') && t.includes('native-1 idle'));
    keep('1-idle', idle);
    let lines = idle.split('\n');
    expect(lines[0]).toMatch(/^reexec \d+\.\d+\.\d+ · up \S+ · 127\.0\.0\.1:\d+ +● live \d\d:\d\d:\d\d$/);
    expect(lines[1]).toMatch(/^ 1 Workers {2}2 Queue {2}3 Cache {2}4 History +tab\/1-4 view · p pause · q quit$/);
    expect(lines[3]).toBe(`native (${hostIsa()}) 0/2 busy · 0 waiting`);
    expect(idle).toContain('nothing finished yet');

    // Four actions on two slots: two run while two wait.
    const actions: Digest[] = await Promise.all([1, 2, 3, 4].map((i) => shAction(clients, tree.root, `sleep 2; echo tmux-${i}`)));
    const batch = executeAll(clients, actions);
    const busy = await waitForScreen('two running actions and two waiting', (t) => count(t, /^ {2}native-\d running +\S+ {2}sh -c sleep 2; echo tmux-\d$/) === 2 && t.includes('2/2 busy · 2 waiting'));
    keep('2-busy', busy);
    lines = busy.split('\n');
    expect(lines[0]).toMatch(/^reexec .* ● live/); // still drawn in place, not scrolled
    expect(lines[3]).toBe(`native (${hostIsa()}) 2/2 busy · 2 waiting`);

    keys('2');
    const queue = await waitForScreen('the queue view', (t) => /^native +\S+ +0 +sh -c sleep 2; echo tmux-\d/m.test(t));
    keep('3-queue', queue);
    expect(count(queue, /^native +\S+ +0 +sh -c sleep 2; echo tmux-\d/)).toBeGreaterThanOrEqual(1);
    keys('1');

    await batch;
    const done = await waitForScreen('four finished actions and idle slots', (t) => count(t, /^\d\d:\d\d:\d\d ✓ exit 0 +\S+ {2}sh -c sleep 2; echo tmux-\d$/) === 4 && t.includes('native-0 idle') && t.includes('native-1 idle'));
    keep('4-done', done);
    lines = done.split('\n');
    expect(lines).toHaveLength(24);
    expect(lines[3]).toBe(`native (${hostIsa()}) 0/2 busy · 0 waiting`);
    expect(lines.every((l) => [...l].length <= 80)).toBe(true);
    expect(lines[21]).toMatch(/^finished\/s +[ ▁-█]+ +4 in 1 min$/);
    expect(lines[22]).toMatch(/^AC hit rate +[ ▁]*▁ +0% in 1 min$/); // every lookup missed

    // A client asking the action cache about actions never run: misses, not errors.
    for (const i of [1, 2]) {
      await call(clients.actionCache, 'GetActionResult', { actionDigest: digestOf(Buffer.from(`never run ${i}`)) }).catch((e: { code: number }) => expect(e.code).toBe(5));
    }
    keys('Tab');
    await waitForScreen('an empty queue', (t) => t.includes('Nothing is waiting'));
    keys('Tab');
    const cache = await waitForScreen('the cache view with the lookups', (t) => t.includes('Action cache') && /ActionCache\.GetActionResult +2/.test(t));
    keep('5-cache', cache);
    expect(cache).toMatch(/Action cache +0% hits since start \(0 hits, 6 misses\) · 4 entries/); // 4 from Execute, 2 asked
    expect(cache).toMatch(/RPCs \(1 min\) +\d+ calls · 2 misses · 0 errors/);
    expect(cache).toMatch(/ {2}method +calls +misses +errors +mean$/m);
    expect(cache).toMatch(/Execution\.Execute +4 +0 +0 +\S+$/m);
    expect(cache).toMatch(/ActionCache\.GetActionResult +2 +2 +0 +\S+$/m);
    // Byte rates in units, never raw fractions ("505.68333333333334 B/s").
    expect(cache).toMatch(/^ {2}in\/s +.* \d+(\.\d{1,2})? (B|KiB|MiB)\/s$/m);
    expect(cache).toMatch(/^ {2}out\/s +.* \d+(\.\d{1,2})? (B|KiB|MiB)\/s$/m);
    expect(cache).not.toMatch(/\d\.\d{3,}/);

    keys('p');
    await waitForScreen('paused', (t) => t.split('\n')[0]!.includes('❚❚ paused'));
    keys('p');
    await waitForScreen('live again', (t) => t.split('\n')[0]!.includes('● live'));

    // A wider terminal: workers and completions side by side.
    tmux('resize-window', '-t', 'dash', '-x', '160', '-y', '40');
    keys('1');
    const wide = await waitForScreen('the wide layout', (t) => /^native \(.*\) 0\/2 busy · 0 waiting +Recently finished$/m.test(t));
    keep('6-wide', wide);
    expect(wide.split('\n')).toHaveLength(40);
    expect(count(wide, /^ {2}native-\d idle +\d\d:\d\d:\d\d ✓ exit 0 +\S+ {2}sh -c sleep 2; echo tmux-\d$/)).toBe(2);
    expect(wide.split('\n')[37]).toMatch(/^finished\/s +[ ▁-█]{40,} +4 in 1 min$/); // sparklines use the room

    keys('q');
    const after = await waitForScreen('the command to exit', (t) => t.includes('EXITED'));
    expect(after).toContain('EXITED 0');
    // The alternate screen is gone: the shell's screen is back, no frame left behind.
    expect(after).not.toContain('Recently finished');
  });
});
