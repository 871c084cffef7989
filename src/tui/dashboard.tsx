import { Box, Text, useApp, useInput, useStdin, useStdout } from 'ink';
import { useEffect, useState, useSyncExternalStore, type ReactNode } from 'react';
import { CacheView } from './components/cache-view.js';
import { Footer } from './components/footer.js';
import { Header, VIEWS, type View } from './components/header.js';
import { HistoryView, historyKeys } from './components/history-view.js';
import { QueueView } from './components/queue-view.js';
import { WorkersView } from './components/workers-view.js';
import type { HistoryFeed } from './history-feed.js';
import type { StatusFeed } from './status-feed.js';

export interface TerminalSize {
  columns: number;
  rows: number;
}

/** The terminal's size, following resizes (80×24 when the stream does not say). */
export function useTerminalSize(fixed?: TerminalSize): TerminalSize {
  const { stdout } = useStdout();
  const read = (): TerminalSize => fixed ?? { columns: stdout.columns || 80, rows: stdout.rows || 24 };
  const [size, setSize] = useState(read);
  useEffect(() => {
    if (fixed) return;
    const onResize = (): void => setSize(read());
    stdout.on('resize', onResize);
    return () => void stdout.off('resize', onResize);
  }, [stdout, fixed]);
  return size;
}

export interface DashboardProps {
  feed: StatusFeed;
  /** The History view's feed (absent: the daemon's history is not available). */
  history?: HistoryFeed;
  endpoint: string;
  initialView?: View;
  /** For tests: render at this size instead of the terminal's. */
  size?: TerminalSize;
}

/** Lines of the header (3) and footer (3), and the last line ink leaves for the cursor. */
const CHROME = 7;

/**
 * The root of `reexec status`: subscribes to the feed and owns the view and keys; everything
 * it shows is drawn by presentational children. The frame is always exactly one line shorter
 * than the terminal, so ink rewrites it in place instead of scrolling (which would flicker).
 */
const noHistory = (): (() => void) => () => undefined;
const noState = (): undefined => undefined;

export function Dashboard({ feed, history, endpoint, initialView = 'workers', size }: DashboardProps): ReactNode {
  const state = useSyncExternalStore(feed.subscribe, feed.getState);
  const historyState = useSyncExternalStore(history?.subscribe ?? noHistory, history?.getState ?? noState);
  const [view, setView] = useState<View>(initialView);
  const { exit } = useApp();
  const { isRawModeSupported } = useStdin();
  const { columns, rows } = useTerminalSize(size);

  // The history is polled only while its view is shown.
  useEffect(() => {
    history?.setActive(view === 'history');
  }, [history, view]);

  useInput(
    (input, key) => {
      // From the current view, not the one this handler was made with: keys typed faster
      // than the dashboard re-renders (tab tab) each count.
      const step = (by: number) => setView((view) => VIEWS[(VIEWS.findIndex((v) => v.id === view) + by + VIEWS.length) % VIEWS.length]!.id);
      if (view === 'history' && history) {
        if (key.upArrow || input === 'k') return history.move(-1);
        if (key.downArrow || input === 'j') return history.move(1);
        if (key.pageUp) return history.move(-10);
        if (key.pageDown) return history.move(10);
        if (input === 'g' || key.home) return history.home();
        if (input === 'f') return history.toggleFailed();
      }
      if (input === 'q' || key.escape || (key.ctrl && input === 'c')) exit();
      else if (input === 'p' || input === ' ') feed.togglePause();
      else if (key.tab && key.shift) step(-1);
      else if (key.tab || key.rightArrow) step(1);
      else if (key.leftArrow) step(-1);
      else if (/^[1-9]$/.test(input) && Number(input) <= VIEWS.length) setView(VIEWS[Number(input) - 1]!.id);
    },
    { isActive: isRawModeSupported !== false },
  );

  // One column spare: a terminal that draws an ambiguous-width character (●, ▁, …) wide would
  // otherwise wrap a full line and push the frame down.
  const width = Math.max(40, columns - 1);
  const bodyHeight = Math.max(3, rows - CHROME);
  const s = state.snapshot;
  let body: ReactNode;
  if (!s) {
    body = <Text dimColor>{state.error ? `Waiting for the daemon at ${endpoint}: ${state.error}` : `Connecting to ${endpoint}…`}</Text>;
  } else if (view === 'workers') {
    body = <WorkersView execution={s.execution} width={width} height={bodyHeight} />;
  } else if (view === 'queue') {
    body = <QueueView execution={s.execution} width={width} height={bodyHeight} />;
  } else if (view === 'history') {
    body = <HistoryView state={historyState} width={width} height={bodyHeight} />;
  } else {
    body = <CacheView snapshot={s} width={width} height={bodyHeight} />;
  }
  const error = state.error ? `${state.error}${state.failingSince ? ' (retrying)' : ''}` : undefined;
  return (
    <Box flexDirection="column" width={width} height={Math.max(CHROME + 3, rows - 1)}>
      <Header snapshot={s} endpoint={endpoint} view={view} paused={state.paused} error={error} width={width} />
      <Box flexDirection="column" height={bodyHeight} overflow="hidden">
        {body}
      </Box>
      <Footer snapshot={s} width={width} keys={view === 'history' ? historyKeys(historyState, width) : undefined} />
    </Box>
  );
}
