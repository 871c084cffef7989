import { render } from 'ink';
import { Dashboard } from './dashboard.js';
import { HistoryFeed, type HistorySource } from './history-feed.js';
import { StatusFeed } from './status-feed.js';
import type { StatusSnapshot } from '../status/status-snapshot.js';

/** Switch the terminal to its alternate screen (as top and less do) and back. */
const ENTER_ALT_SCREEN = '\u001b[?1049h\u001b[H';
const LEAVE_ALT_SCREEN = '\u001b[?1049l';

/**
 * Run the dashboard until the user quits: polls with a StatusFeed, draws on the alternate
 * screen, and puts the terminal back however it ends.
 */
export async function runDashboard(opts: { fetch: () => Promise<StatusSnapshot>; endpoint: string; intervalMs: number; first?: StatusSnapshot; history?: HistorySource }): Promise<void> {
  const feed = new StatusFeed(opts.fetch, opts.intervalMs);
  const history = opts.history ? new HistoryFeed(opts.history, Math.max(1000, opts.intervalMs)) : undefined;
  if (opts.first) feed.seed(opts.first);
  const restore = (): void => void process.stdout.write(LEAVE_ALT_SCREEN);
  process.stdout.write(ENTER_ALT_SCREEN);
  process.once('exit', restore);
  // Each frame is rewritten whole, inside the synchronized-output escapes ink sends to a TTY
  // (mode 2026), which terminals that know it draw at once: no flicker. Not ink's
  // incrementalRendering: in ink 6.8 it moves the cursor one line short when a frame ends
  // with a newline (every frame shorter than the terminal), drawing the header twice.
  const app = render(<Dashboard feed={feed} history={history} endpoint={opts.endpoint} />, { exitOnCtrlC: true, patchConsole: true });
  feed.start();
  try {
    await app.waitUntilExit();
  } finally {
    feed.stop();
    history?.stop();
    app.cleanup();
    process.off('exit', restore);
    restore();
  }
}
