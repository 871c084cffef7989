import { Box, Text } from 'ink';
import type { ReactNode } from 'react';
import { formatPercent, hitRatios } from '../../status/format.js';
import type { StatusSnapshot } from '../../status/status-snapshot.js';
import { SparklineRow } from './sparkline-row.js';

/**
 * A rule and two sparklines over the last minute: finished actions per second and AC hit
 * rate; with `keys` (a view with keys of its own) the first sparkline gives way to them.
 */
export function Footer({ snapshot, width, keys }: { snapshot?: StatusSnapshot; width: number; keys?: string }): ReactNode {
  const t = snapshot?.execution?.throughput;
  const total = t ? t.executed.map((v, i) => v + (t.cached[i] ?? 0)) : [];
  const done = total.reduce((a, b) => a + b, 0);
  const ac = snapshot?.cache.ac;
  const ratios = ac ? hitRatios(ac.perSecond.hits, ac.perSecond.misses) : [];
  return (
    <Box flexDirection="column" width={width}>
      <Text dimColor>{'─'.repeat(width)}</Text>
      {keys ? (
        <Text dimColor wrap="truncate-end">
          {keys}
        </Text>
      ) : (
        <SparklineRow label="finished/s" labelWidth={12} values={total} value={snapshot ? `${done} in 1 min` : ''} width={width} />
      )}
      <SparklineRow label="AC hit rate" labelWidth={12} values={ratios} max={1} value={ac ? `${formatPercent(ac.lastMinute.hitRate)} in 1 min` : ''} width={width} color="green" />
    </Box>
  );
}
