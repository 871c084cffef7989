import { render } from 'ink-testing-library';
import { afterEach, describe, expect, it } from 'vitest';
import { CacheView } from '../../src/tui/components/cache-view.js';
import { Header } from '../../src/tui/components/header.js';
import { QueueView } from '../../src/tui/components/queue-view.js';
import { planPoolLines, WorkersView } from '../../src/tui/components/workers-view.js';
import type { PoolStatus } from '../../src/status/status-snapshot.js';
import { busySnapshot, plain } from './fixtures.js';

const lines = (frame: string | undefined): string[] => plain(frame).split('\n');
const widest = (frame: string | undefined): number => Math.max(...lines(frame).map((l) => [...l].length));

let unmount: (() => void) | undefined;
afterEach(() => unmount?.());
function show(node: React.ReactElement): string {
  const r = render(node);
  unmount = r.unmount;
  return plain(r.lastFrame());
}

describe('WorkersView', () => {
  it('shows each slot with its action, elapsed time and command, then what finished, in 80×17', () => {
    const frame = show(<WorkersView execution={busySnapshot().execution} width={79} height={17} />);
    const text = frame.split('\n');
    expect(text).toHaveLength(17);
    expect(widest(frame)).toBeLessThanOrEqual(79);
    expect(text[0]).toBe('native (x86-64) 2/3 busy · 4 waiting');
    expect(text[1]).toMatch(/^ {2}native-0 running +12\.3s {2}gcc -c foo\.c -o foo\.o$/);
    expect(text[2]).toMatch(/^ {2}native-1 uploading +4m05s {2}sh -c sleep 100$/);
    expect(text[3]).toBe('  native-2 idle');
    expect(text[4]).toBe('arm64 (aarch64) unavailable: qemu-user-static is not installed');
    expect(frame).toContain('Recently finished');
    expect(frame).toMatch(/✓ cached +gcc -c cached\.c/);
    expect(frame).toMatch(/✗ exit 3 +1\.5s {2}false-ish --fail/);
    expect(frame).toMatch(/✗ DEADLINE_… +1\.5s {2}sleep forever/);
    // Narrow: no client column.
    expect(frame).not.toContain('127.0.0.1:41234');
  });

  it('puts workers and completions side by side on a wide terminal, with clients', () => {
    const frame = show(<WorkersView execution={busySnapshot().execution} width={180} height={20} />);
    const text = frame.split('\n');
    expect(text).toHaveLength(20);
    expect(text[0]).toMatch(/^native \(x86-64\) 2\/3 busy · 4 waiting +Recently finished$/);
    expect(text[1]).toMatch(/native-0 running +12\.3s {2}gcc -c foo\.c -o foo\.o +127\.0\.0\.1:41234 +\d\d:\d\d:\d\d ✓ cached/);
    // Every completion fits: 15 listed in 19 rows.
    expect(frame.match(/\d\d:\d\d:\d\d [✓✗]/g)).toHaveLength(15);
  });

  it('says so when remote execution is disabled', () => {
    expect(show(<WorkersView execution={null} width={80} height={5} />)).toContain('Remote execution is disabled');
  });
});

describe('planPoolLines', () => {
  const pool = (slots: number, busy: number): PoolStatus => ({
    name: 'big',
    isas: ['x86-64'],
    queueDepth: 0,
    slots: Array.from({ length: slots }, (_, i) => ({
      slot: `big-${i}`,
      action: i < busy ? { operation: `op-${i}`, argv: ['true'], pool: 'big', stage: 'EXECUTING' as const, startedAt: '', elapsedMs: 1, queuedMs: 0 } : null,
    })),
  });

  it('lists every slot when they fit', () => {
    expect(planPoolLines([pool(4, 1)], 10).map((l) => l.kind)).toEqual(['pool', 'slot', 'slot', 'slot', 'slot']);
  });

  it('folds idle slots into a count when they do not', () => {
    const out = planPoolLines([pool(32, 3)], 10);
    expect(out.map((l) => l.kind)).toEqual(['pool', 'slot', 'slot', 'slot', 'more']);
    expect(out[4]).toEqual({ kind: 'more', text: '29 idle slots' });
  });

  it('keeps every pool header and counts the running slots it cannot show', () => {
    const out = planPoolLines([pool(64, 40), { ...pool(2, 0), name: 'other' }], 10);
    expect(out).toHaveLength(10);
    expect(out.filter((l) => l.kind === 'pool')).toHaveLength(2);
    expect(out.at(-1)).toMatchObject({ kind: 'more', text: expect.stringMatching(/^\+\d+ more running$/) });
    const shown = out.filter((l) => l.kind === 'slot').length;
    expect(Number((out.at(-1) as { text: string }).text.match(/\d+/)![0]) + shown).toBe(40);
  });
});

describe('QueueView', () => {
  it('lists waiting actions in order with how long they waited', () => {
    const frame = show(<QueueView execution={busySnapshot().execution} width={79} height={17} />);
    expect(frame.split('\n')[0]).toBe('native 4 waiting (2/3 busy) · arm64 0 waiting (0/0 busy)');
    expect(frame).toMatch(/native +1\.0s +0 +cc unit-1\.c/);
    expect(frame).toMatch(/native +4\.0s +0 +cc unit-4\.c/);
    expect(widest(frame)).toBeLessThanOrEqual(79);
  });

  it('counts what does not fit', () => {
    const frame = show(<QueueView execution={busySnapshot().execution} width={79} height={5} />);
    expect(frame).toContain('cc unit-1.c');
    expect(frame).not.toContain('cc unit-3.c');
    expect(frame).toContain('+3 more waiting');
  });

  it('says when nothing waits', () => {
    const s = busySnapshot();
    const frame = show(<QueueView execution={{ ...s.execution!, queued: [], queuedTotal: 0 }} width={79} height={8} />);
    expect(frame).toContain('Nothing is waiting');
  });
});

describe('CacheView', () => {
  it('shows the hit rate, the store against its budget, and RPC traffic by method', () => {
    const frame = show(<CacheView snapshot={busySnapshot()} width={79} height={17} />);
    expect(frame.split('\n')).toHaveLength(17);
    expect(widest(frame)).toBeLessThanOrEqual(79);
    expect(frame).toMatch(/Action cache +75% hits since start \(30 hits, 10 misses\) · 42 entries/);
    expect(frame).toMatch(/hit rate\/s +[ ▁-█]+ +75% last min/);
    expect(frame).toMatch(/CAS +12,345 blobs · 3\.00 GiB of 10\.0 GiB budget/);
    expect(frame).toMatch(/█+░+ 30% of budget/);
    // Lookups that find nothing are misses, not errors.
    expect(frame).toMatch(/RPCs \(1 min\) +600 calls · 10 misses · 2 errors · in 50\.0 MiB · out 8\.00 MiB/);
    expect(frame).toMatch(/calls\/s +[▁-█ ]+ +10\/s/);
    // Rates of bytes in units, rounded: 295,000 B/s and 505.68… B/s.
    expect(frame).toMatch(/in\/s +[▁-█ ]+ +288 KiB\/s$/m);
    expect(frame).toMatch(/out\/s +[▁-█ ]+ +506 B\/s$/m);
    expect(frame).not.toMatch(/\d\.\d{3,}/);
    expect(frame).toMatch(/ {2}method +calls +misses +errors +mean$/m);
    expect(frame).toMatch(/Execution\.Execute +200 +0 +2 +1\.5s/);
    expect(frame).toMatch(/ActionCache\.GetActionResult +10 +10 +0 +<1ms/);
  });
});

describe('Header', () => {
  it('names the daemon, the view and the keys, and says when it is paused or unreachable', () => {
    const s = busySnapshot();
    const live = show(<Header snapshot={s} endpoint="127.0.0.1:50051" view="queue" paused={false} width={79} />);
    expect(live.split('\n')[0]).toMatch(/^reexec 0\.1\.0 · up 2h13m · 127\.0\.0\.1:50051 +● live \d\d:\d\d:\d\d$/);
    expect(live.split('\n')[1]).toMatch(/^ 1 Workers {2}2 Queue {2}3 Cache {2}4 History +tab\/1-4 view · p pause · q quit$/);
    unmount?.();
    expect(show(<Header snapshot={s} endpoint="x:1" view="queue" paused width={79} />)).toContain('❚❚ paused');
    unmount?.();
    expect(show(<Header snapshot={s} endpoint="x:1" view="queue" paused={false} error="no reexec daemon is answering" width={79} />)).toContain('✗ no reexec daemon is answering');
  });
});
