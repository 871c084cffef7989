import { render } from 'ink-testing-library';
import { afterEach, describe, expect, it } from 'vitest';
import type { reexec } from '../../src/gen/proto.js';
import type { HistoryEntry } from '../../src/history/entry.js';
import { HistoryFeed, type HistorySource } from '../../src/tui/history-feed.js';
import { Dashboard } from '../../src/tui/dashboard.js';
import { StatusFeed } from '../../src/tui/status-feed.js';
import { busySnapshot, plain } from './fixtures.js';

const T0 = Date.now();
/** Wait until the frame shows what a step leads to (a condition, never a fixed time). */
async function until(frame: () => string, ok: (text: string) => boolean, what: string): Promise<string> {
  for (let i = 0; i < 500; i++) {
    const text = frame();
    if (ok(text)) return text;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`the view never showed ${what}:\n${frame()}`);
}
const DOWN = '\u001b[B';
const UP = '\u001b[A';

function entry(i: number, over: Partial<HistoryEntry> = {}): HistoryEntry {
  return {
    id: `${String(T0 - i * 1000).padStart(15, '0')}.${String(i).padStart(6, '0')}`,
    at: T0 - i * 1000,
    kind: 'execute',
    outcome: 'ran',
    instance: '',
    digestFunction: 'sha256',
    action: `${String(i).repeat(64).slice(0, 64)}/${100 + i}`,
    operation: `operations/op-${i}`,
    client: { peer: 'ipv4:127.0.0.1:4000' },
    status: { code: 0 },
    exitCode: 0,
    failed: false,
    argv: ['gcc', '-c', `unit-${i}.c`],
    request: { tool: 'bazel', toolVersion: '7.7.1', targetId: `//src:unit${i}`, mnemonic: 'CppCompile' },
    worker: 'reexec/native-0',
    timings: { queued: T0 - i * 1000 - 900, workerStart: T0 - i * 1000 - 890, executionStart: T0 - i * 1000 - 800, executionEnd: T0 - i * 1000 - 100, workerEnd: T0 - i * 1000 - 90 },
    ...over,
  };
}

/** The daemon's history, in memory: what the view is given to draw. */
class FakeHistory implements HistorySource {
  shows: string[] = [];
  constructor(public entries: HistoryEntry[]) {}
  async list(req: reexec.admin.v1.IListHistoryRequest): Promise<HistoryEntry[]> {
    return this.entries.filter((e) => !req.failedOnly || e.failed).slice(0, req.limit ?? 50);
  }
  async show(ref: string): Promise<reexec.admin.v1.IActionDetails> {
    this.shows.push(ref);
    const e = this.entries.find((x) => x.operation === ref)!;
    return {
      actionDigest: e.action,
      command: { arguments: e.argv },
      inputRoot: { files: 12, bytes: 4096 },
      missing: [],
      stderr: { size: e.failed ? 40 : 0, tail: Buffer.from(e.failed ? 'unit-3.c:7: error: expected ;\n' : ''), present: true },
      stdout: { size: 0, tail: Buffer.alloc(0), present: true },
    };
  }
}

let cleanup: (() => void) | undefined;
afterEach(() => cleanup?.());

function mount(source: HistorySource) {
  const feed = new StatusFeed(async () => busySnapshot(), 40);
  const history = new HistoryFeed(source, 40);
  const r = render(<Dashboard feed={feed} history={history} endpoint="127.0.0.1:50051" size={{ columns: 100, rows: 30 }} initialView="history" />);
  feed.start();
  cleanup = () => {
    feed.stop();
    history.stop();
    r.unmount();
  };
  return { ...r, history, frame: () => plain(r.lastFrame()) };
}

describe('the History view', () => {
  it('lists recent actions newest first, failures in red, and shows the selected one with the end of its stderr', async () => {
    const source = new FakeHistory([entry(1), entry(2, { outcome: 'cached' }), entry(3, { failed: true, exitCode: 1 }), entry(4, { kind: 'lookup', outcome: 'miss', argv: undefined, status: { code: 5 } })]);
    const d = mount(source);
    const lines = (await until(d.frame, (t) => t.includes('inputs: 12 files'), 'the first entry with its details')).split('\n');
    expect(lines).toHaveLength(29);
    expect(lines[1]).toMatch(/4 History/);
    expect(lines[3]).toMatch(/^TIME +RESULT +TOOK +ACTION +WHAT/);
    expect(lines[4]).toMatch(/^\d\d:\d\d:\d\d +✓ ran +810ms +111111111111 +\/\/src:unit1 · CppCompile · gcc -c unit-1\.c/);
    expect(lines[5]).toMatch(/✓ cached +222222222222/);
    expect(lines[6]).toMatch(/✗ exit 1 +810ms +333333333333 +\/\/src:unit3/);
    expect(lines[7]).toMatch(/miss +444444444444 +\/\/src:unit4 · CppCompile$/);
    // (Colours: the tmux test looks at them, ink draws none without a terminal.)
    // The newest is selected: its details below the list.
    expect(d.frame()).toMatch(/✓ ran · \d\d:\d\d:\d\d · on reexec\/native-0 · 127\.0\.0\.1:4000/);
    expect(d.frame()).toContain('$ gcc -c unit-1.c');
    expect(d.frame()).toContain('inputs: 12 files, 4.00 KiB');
    expect(lines[lines.length - 2]).toMatch(/^↑↓\/j k select · g newest · f failed only · 1\/4$/);

    d.stdin.write(DOWN);
    d.stdin.write(DOWN);
    await until(d.frame, (t) => t.includes('stderr (40 B), the end:'), 'the third entry\'s stderr');
    expect(d.frame()).toContain('  unit-3.c:7: error: expected ;');
    expect(d.frame().split('\n').at(-2)).toMatch(/ · 3\/4$/);
    expect(source.shows).toEqual(expect.arrayContaining(['operations/op-1', 'operations/op-3']));

    // New entries arrive: the selection stays on the same action.
    source.entries = [entry(0), ...source.entries];
    await until(d.frame, (t) => / · 4\/5$/.test(t.split('\n').at(-2)!), 'five entries');
    expect(d.frame()).toContain('unit-3.c:7: error: expected ;');
    d.stdin.write(UP);
    await until(d.frame, (t) => t.includes('$ gcc -c unit-2.c'), 'the second entry');
  });

  it('f lists failures only, g goes back to the newest', async () => {
    const d = mount(new FakeHistory([entry(1), entry(2, { failed: true, exitCode: 2 }), entry(3)]));
    await until(d.frame, (t) => / · 1\/3$/.test(t.split('\n').at(-2)!), 'three entries');
    d.stdin.write('f');
    const lines = (await until(d.frame, (t) => t.includes('(failed only)') && / · 1\/1$/.test(t.split('\n').at(-2)!), 'failures only')).split('\n');
    expect(lines[3]).toContain('(failed only)');
    expect(lines[4]).toMatch(/✗ exit 2 +\S+ +222222222222/);
    expect(lines[5]).not.toMatch(/ran/);
    expect(lines.at(-2)).toMatch(/f every action · 1\/1$/);
    d.stdin.write('f');
    await until(d.frame, (t) => / · 1\/3$/.test(t.split('\n').at(-2)!), 'every action again');
    d.stdin.write('j');
    d.stdin.write('j');
    await until(d.frame, (t) => / · 3\/3$/.test(t.split('\n').at(-2)!), 'the oldest selected');
    d.stdin.write('g');
    await until(d.frame, (t) => / · 1\/3$/.test(t.split('\n').at(-2)!), 'the newest selected');
  });

  it('says when nothing is recorded, and when the daemon refuses', async () => {
    const d = mount(new FakeHistory([]));
    await until(d.frame, (t) => t.includes('Nothing recorded yet'), 'an empty history');
    cleanup?.();
    const refusing: HistorySource = { list: async () => Promise.reject(new Error('the action history is off in this daemon (history.enabled: false in its config)')), show: async () => ({}) };
    const e = mount(refusing);
    await until(e.frame, (t) => t.includes('the action history is off in this daemon'), 'the refusal');
  });
});
