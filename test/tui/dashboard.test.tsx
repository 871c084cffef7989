import { render } from 'ink-testing-library';
import { afterEach, describe, expect, it } from 'vitest';
import { Dashboard } from '../../src/tui/dashboard.js';
import { StatusFeed } from '../../src/tui/status-feed.js';
import type { StatusSnapshot } from '../../src/status/status-snapshot.js';
import { waitFor } from '../helpers/wait.js';
import { busySnapshot, plain } from './fixtures.js';

const tick = (ms = 60): Promise<void> => new Promise((r) => setTimeout(r, ms));
/** Until the picture (or its first line) shows `text`: rendering runs on its own schedule. */
const showing = (d: { frame: () => string }, text: string, line?: number): Promise<string> =>
  waitFor(`the dashboard to show "${text}"`, () => {
    const f = d.frame();
    return (line === undefined ? f : (f.split('\n')[line] ?? '')).includes(text) ? f : undefined;
  }, { intervalMs: 10 });
const TAB = '\t';
const SHIFT_TAB = '\u001b[Z';

function mount(fetch: () => Promise<StatusSnapshot>, size = { columns: 80, rows: 24 }) {
  const feed = new StatusFeed(fetch, 40);
  const r = render(<Dashboard feed={feed} endpoint="127.0.0.1:50051" size={size} />);
  feed.start();
  return { feed, ...r, frame: () => plain(r.lastFrame()) };
}

/** Until the dashboard reads its keys (ink subscribes in an effect, after the first frames). */
const listening = (d: { stdin: { listenerCount(e: string): number } }): Promise<boolean> =>
  waitFor('the dashboard to read its keys', () => d.stdin.listenerCount('readable') > 0, { intervalMs: 10 });

let cleanup: (() => void) | undefined;
afterEach(() => cleanup?.());

describe('Dashboard', () => {
  it('fills 80×24 exactly, header to footer, with the workers view first', async () => {
    const d = mount(async () => busySnapshot());
    cleanup = () => (d.feed.stop(), d.unmount());
    const lines = (await showing(d, '● live', 0)).split('\n');
    expect(lines).toHaveLength(23); // one line left for the cursor: no scrolling
    expect(Math.max(...lines.map((l) => [...l].length))).toBeLessThanOrEqual(79);
    expect(lines[0]).toMatch(/^reexec 0\.1\.0 · up 2h13m · 127\.0\.0\.1:50051 +● live/);
    expect(lines[1]).toContain('1 Workers');
    expect(lines[3]).toBe('native (x86-64) 2/3 busy · 4 waiting');
    expect(lines[21]).toMatch(/^finished\/s +[ ▁-█]+ +\d+ in 1 min$/);
    expect(lines[22]).toMatch(/^AC hit rate +[ ▁-█]+ +75% in 1 min$/);
  });

  it('switches views with 1-4, tab and shift-tab', async () => {
    const d = mount(async () => busySnapshot());
    cleanup = () => (d.feed.stop(), d.unmount());
    await showing(d, '● live', 0);
    await listening(d);
    d.stdin.write('2');
    await showing(d, 'cc unit-1.c');
    d.stdin.write(TAB);
    await showing(d, 'Action cache');
    d.stdin.write(TAB);
    await showing(d, 'The action history is not available from this daemon.');
    d.stdin.write(TAB);
    await showing(d, 'Recently finished');
    d.stdin.write(SHIFT_TAB);
    await showing(d, 'The action history is not available from this daemon.');
    d.stdin.write(SHIFT_TAB);
    await showing(d, 'Action cache');
    d.stdin.write('1');
    await showing(d, 'native-0 running');
  });

  it('p pauses polling and freezes the picture; p again resumes', async () => {
    let n = 0;
    const d = mount(async () => busySnapshot({ uptimeSeconds: ++n }));
    cleanup = () => (d.feed.stop(), d.unmount());
    await showing(d, '● live', 0);
    await listening(d);
    d.stdin.write('p');
    const frozen = await showing(d, '❚❚ paused', 0);
    const polls = n;
    // Paused: however long one waits, nothing is polled and nothing changes.
    await tick(200);
    expect(n).toBe(polls);
    expect(d.frame()).toBe(frozen);
    d.stdin.write('p');
    await showing(d, '● live', 0);
    await waitFor('polling to resume', () => n > polls);
  });

  it('keeps the last picture and says so when the daemon stops answering', async () => {
    let up = true;
    const d = mount(async () => {
      if (!up) throw new Error('no reexec daemon is answering at 127.0.0.1:50051 (connection refused)');
      return busySnapshot();
    });
    cleanup = () => (d.feed.stop(), d.unmount());
    await showing(d, '● live', 0);
    up = false;
    const lines = (await showing(d, '✗ no reexec daemon is answering', 0)).split('\n');
    expect(lines[3]).toBe('native (x86-64) 2/3 busy · 4 waiting');
    up = true;
    await showing(d, '● live', 0);
  });

  it('uses a wide terminal: side by side, with clients', async () => {
    const d = mount(async () => busySnapshot(), { columns: 160, rows: 40 });
    cleanup = () => (d.feed.stop(), d.unmount());
    const lines = (await showing(d, '● live', 0)).split('\n');
    expect(lines).toHaveLength(39);
    expect(lines[3]).toMatch(/native \(x86-64\).*Recently finished/);
    expect(d.frame()).toContain('127.0.0.1:41234');
  });

  it('q quits', async () => {
    const d = mount(async () => busySnapshot());
    cleanup = () => d.feed.stop();
    await showing(d, '● live', 0);
    expect(d.feed.subscribers).toBe(1);
    await listening(d);
    d.stdin.write('q');
    await waitFor('the dashboard to unsubscribe', () => d.feed.subscribers === 0);
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
    await waitFor('a first snapshot', () => feed.getState().received > 0);
    fail = true;
    await waitFor('a failed poll', () => feed.getState().error === 'down');
    expect(feed.getState().failingSince).toBeDefined();
    expect(feed.getState().snapshot).toBeDefined();
    fail = false;
    await waitFor('a good poll again', () => feed.getState().error === undefined);
    feed.stop();
    // Polls 10 ms apart, each taking 100 ms: never two at once.
    expect(most).toBe(1);
  });
});
