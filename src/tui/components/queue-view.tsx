import { Box, Text } from 'ink';
import type { ReactNode } from 'react';
import { formatArgv, formatClient, formatDuration, fit } from '../../status/format.js';
import type { ExecutionStatus } from '../../status/status-snapshot.js';
import { Row, Title } from './row.js';

export interface QueueViewProps {
  execution: ExecutionStatus | null;
  width: number;
  height: number;
}

/** What waits for a worker: depth per pool, then the waiting actions in the order they will run. */
export function QueueView({ execution, width, height }: QueueViewProps): ReactNode {
  if (!execution) {
    return (
      <Box height={height}>
        <Row dim>Remote execution is disabled in this daemon's config (execution.enabled).</Row>
      </Box>
    );
  }
  const showClient = width >= 100;
  const poolWidth = Math.max(4, ...execution.pools.map((p) => p.name.length));
  const argvWidth = Math.max(8, width - poolWidth - 2 - 8 - 2 - 5 - 2 - (showClient ? 23 : 0));
  const rows = Math.max(0, height - 3);
  const shown = execution.queued.slice(0, execution.queuedTotal > rows ? rows - 1 : rows);
  const more = execution.queuedTotal - shown.length;
  return (
    <Box flexDirection="column" width={width} height={height}>
      <Row>
        {execution.pools.map((p, i) => (
          <Text key={p.name}>
            {i > 0 ? ' · ' : ''}
            <Text bold>{p.name}</Text> <Text color={p.queueDepth ? 'yellow' : 'green'}>{p.queueDepth} waiting</Text>
            <Text dimColor>
              {' '}
              ({p.slots.filter((s) => s.action).length}/{p.slots.length} busy)
            </Text>
          </Text>
        ))}
      </Row>
      <Row> </Row>
      {execution.queuedTotal === 0 ? (
        <Row dim>Nothing is waiting: every action got a worker.</Row>
      ) : (
        <>
          <Title>
            {fit('pool', poolWidth)}  {fit('waiting', 8, 'right')}  {fit('prio', 5)}  {fit('command', argvWidth)}
            {showClient ? `  ${'client'}` : ''}
          </Title>
          {shown.map((q) => (
            <Row key={q.operation}>
              {fit(q.pool, poolWidth)}  <Text color="yellow">{fit(formatDuration(q.waitingMs), 8, 'right')}</Text>  {fit(String(q.priority), 5)}  {fit(formatArgv(q.argv), argvWidth)}
              {showClient ? <Text dimColor>{`  ${formatClient(q.client)}`}</Text> : null}
            </Row>
          ))}
          {more > 0 ? <Row dim>+{more} more waiting</Row> : null}
        </>
      )}
    </Box>
  );
}
