import { render } from 'ink-testing-library';
import { afterEach, describe, expect, it } from 'vitest';
import { Dashboard } from '../../src/tui/dashboard.js';
import { StatusFeed } from '../../src/tui/status-feed.js';
import type { StatusSnapshot } from '../../src/status/status-snapshot.js';
import { busySnapshot, plain } from './fixtures.js';

const tick = (ms = 60): Promise<void> => new Promise((r) => setTimeout(r, ms));
const TAB = '\t';
const SHIFT_TAB = '\u001b[Z';

function mount(fetch: () => Promise<StatusSnapshot>, size = { columns: 80, rows: 24 }) {
  const feed = new StatusFeed(fetch, 40);
  const r = render(<Dashboard feed={feed} endpoint="127.0.0.1:50051" size={size} />);
  feed.start();
  return { feed, ...r, frame: () => plain(r.lastFrame()) };
}

let cleanup: (() => void) | undefined;
afterEach(() => cleanup?.());

describe('Dashboard', () => {
  it('fills 80×24 exactly, header to footer, with the workers view first', async () => {
    const d = mount(async () => busySnapshot());
    cleanup = () => (d.feed.stop(), d.unmount());
    await tick(100);
    const lines = d.frame().split('\n');
    expect(lines).toHaveLength(23); // one line left for the cursor: no scrolling
    expect(Math.max(...lines.map((l) => [...l].length))).toBeLessThanOrEqual(79);
    expect(lines[0]).toMatch(/^reexec 0\.1\.0 · up 2h13m · 127\.0\.0\.1:50051 +● live/);
    expect(lines[1]).toContain('1 Workers');
    expect(lines[3]).toBe('native (x86-64) 2/3 busy · 4 waiting');
    expect(lines[21]).toMatch(/^finished\/s +[ ▁-█]+ +\d+ in 1 min$/);
    expect(lines[22]).toMatch(/^AC hit rate +[ ▁-█]+ +75% in 1 min$/);
  });

  it('switches views with 1-3, tab and shift-tab', async () => {
    const d = mount(async () => busySnapshot());
    cleanup = () => (d.feed.stop(), d.unmount());
    await tick();
    d.stdin.write('2');
    await tick();
    expect(d.frame()).toContain('cc unit-1.c');
    d.stdin.write(TAB);
    await tick();
    expect(d.frame()).toContain('Action cache');
    d.stdin.write(TAB);
    await tick();
    expect(d.frame()).toContain('Recently finished');
    d.stdin.write(SHIFT_TAB);
    await tick();
    expect(d.frame()).toContain('Action cache');
    d.stdin.write('1');
    await tick();
    expect(d.frame()).toContain('native-0 running');
  });

  it('p pauses polling and freezes the picture; p again resumes', async () => {
    let n = 0;
    const d = mount(async () => busySnapshot({ uptimeSeconds: ++n }));
    cleanup = () => (d.feed.stop(), d.unmount());
    await tick(150);
    d.stdin.write('p');
    await tick();
    expect(d.frame().split('\n')[0]).toContain('❚❚ paused');
    const frozen = d.frame();
    const polls = n;
    await tick(200);
    expect(n).toBe(polls);
    expect(d.frame()).toBe(frozen);
    d.stdin.write('p');
    await tick(150);
    expect(n).toBeGreaterThan(polls);
    expect(d.frame().split('\n')[0]).toContain('● live');
  });

  it('keeps the last picture and says so when the daemon stops answering', async () => {
    let up = true;
    const d = mount(async () => {
      if (!up) throw new Error('no reexec daemon is answering at 127.0.0.1:50051 (connection refused)');
      return busySnapshot();
    });
    cleanup = () => (d.feed.stop(), d.unmount());
    await tick(100);
    up = false;
    await tick(100);
    const lines = d.frame().split('\n');
    expect(lines[0]).toContain('✗ no reexec daemon is answering');
    expect(lines[3]).toBe('native (x86-64) 2/3 busy · 4 waiting');
    up = true;
    await tick(100);
    expect(d.frame().split('\n')[0]).toContain('● live');
  });

  it('uses a wide terminal: side by side, with clients', async () => {
    const d = mount(async () => busySnapshot(), { columns: 160, rows: 40 });
    cleanup = () => (d.feed.stop(), d.unmount());
    await tick(100);
    const lines = d.frame().split('\n');
    expect(lines).toHaveLength(39);
    expect(lines[3]).toMatch(/native \(x86-64\).*Recently finished/);
    expect(d.frame()).toContain('127.0.0.1:41234');
  });

  it('q quits', async () => {
    const d = mount(async () => busySnapshot());
    cleanup = () => d.feed.stop();
    await tick();
    expect(d.feed.subscribers).toBe(1);
    d.stdin.write('q');
    await tick();
    expect(d.feed.subscribers).toBe(0);
  });
});

describe('StatusFeed', () => {
  it('never polls twice at once and records failures until the next success', async () => {
    let running = 0;
    let most = 0;
    let fail = false;
    const feed = new StatusFeed(async () => {
      running++;
      most = Math.max(most, running);
      await tick(100);
      running--;
      if (fail) throw new Error('down');
      return busySnapshot();
    }, 10);
    feed.start();
    await tick(250);
    expect(most).toBe(1);
    expect(feed.getState().received).toBeGreaterThan(0);
    fail = true;
    await tick(250);
    expect(feed.getState().error).toBe('down');
    expect(feed.getState().failingSince).toBeDefined();
    expect(feed.getState().snapshot).toBeDefined();
    fail = false;
    await tick(250);
    feed.stop();
    expect(feed.getState().error).toBeUndefined();
  });
});
