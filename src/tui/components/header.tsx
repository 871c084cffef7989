import { Box, Text } from 'ink';
import type { ReactNode } from 'react';
import { formatClock, formatDuration, truncate } from '../../status/format.js';
import type { StatusSnapshot } from '../../status/status-snapshot.js';

export type View = 'workers' | 'queue' | 'cache' | 'history';
export const VIEWS: ReadonlyArray<{ id: View; label: string }> = [
  { id: 'workers', label: 'Workers' },
  { id: 'queue', label: 'Queue' },
  { id: 'cache', label: 'Cache' },
  { id: 'history', label: 'History' },
];

export interface HeaderProps {
  snapshot?: StatusSnapshot;
  endpoint: string;
  view: View;
  paused: boolean;
  error?: string;
  width: number;
}

/** Three lines: the daemon and whether the picture is live, the views and keys, a rule. */
export function Header({ snapshot, endpoint, view, paused, error, width }: HeaderProps): ReactNode {
  const left = snapshot ? `reexec ${snapshot.version} · up ${formatDuration(snapshot.uptimeSeconds * 1000)} · ${endpoint}` : `reexec · ${endpoint}`;
  const state = error ? `✗ ${error}` : paused ? '❚❚ paused' : snapshot ? `● live ${formatClock(snapshot.takenAt)}` : '… connecting';
  const stateColor = error ? 'red' : paused ? 'yellow' : 'green';
  const stateText = truncate(state, Math.max(12, width - left.length - 2));
  const keys = width >= 78 ? `tab/1-${VIEWS.length} view · p pause · q quit` : 'tab · p · q';
  return (
    <Box flexDirection="column" width={width}>
      <Box justifyContent="space-between" width={width}>
        <Text wrap="truncate-end" bold>
          {truncate(left, width - stateText.length - 2)}
        </Text>
        <Text color={stateColor}>{stateText}</Text>
      </Box>
      <Box justifyContent="space-between" width={width}>
        <Text>
          {VIEWS.map((v, i) => (
            <Text key={v.id} inverse={v.id === view} bold={v.id === view}>
              {` ${i + 1} ${v.label} `}
            </Text>
          ))}
        </Text>
        <Text dimColor>{keys}</Text>
      </Box>
      <Text dimColor>{'─'.repeat(width)}</Text>
    </Box>
  );
}
