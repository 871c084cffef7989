import { Box, Text } from 'ink';
import type { ReactNode } from 'react';
import { formatArgv, formatClient, formatClock, formatDuration, fit } from '../../status/format.js';
import { activity, outcome } from '../../status/render-plain.js';
import type { CompletedAction, ExecutionStatus, PoolStatus, SlotStatus } from '../../status/status-snapshot.js';
import { Row, Title } from './row.js';

/** Columns from which the client address is shown. */
const CLIENT_FROM = 90;
/** Columns from which workers and recent completions sit side by side. */
const SIDE_BY_SIDE_FROM = 140;
const CLIENT_WIDTH = 21;
const PHASE_COLOURS: Record<string, string> = { staging: 'cyan', running: 'green', uploading: 'magenta', forwarding: 'cyan', 'queued-upstream': 'yellow', fetching: 'magenta' };

type PoolLine = { kind: 'pool'; pool: PoolStatus } | { kind: 'slot'; slot: SlotStatus; slotWidth: number } | { kind: 'more'; text: string };

/**
 * The lines of the worker pools in at most `height` rows: every slot when they fit, else the
 * busy slots and a count of idle ones, else as many busy slots as fit and a count of the rest.
 */
export function planPoolLines(pools: readonly PoolStatus[], height: number): PoolLine[] {
  const slotWidth = Math.max(4, ...pools.flatMap((p) => p.slots.map((s) => s.slot.length)));
  const full: PoolLine[] = pools.flatMap((p) => [{ kind: 'pool' as const, pool: p }, ...p.slots.map((slot) => ({ kind: 'slot' as const, slot, slotWidth }))]);
  if (full.length <= height) return full;
  const compact: PoolLine[] = [];
  for (const p of pools) {
    compact.push({ kind: 'pool', pool: p });
    const busy = p.slots.filter((s) => s.action);
    const idle = p.slots.length - busy.length;
    for (const slot of busy) compact.push({ kind: 'slot', slot, slotWidth });
    if (idle > 0) compact.push({ kind: 'more', text: `${idle} idle slot${idle === 1 ? '' : 's'}` });
  }
  if (compact.length <= height) return compact;
  // Still too many: keep every pool header, as many running slots as fit, and say how many are hidden.
  const headersAfter = (i: number): number => compact.slice(i + 1).filter((l) => l.kind === 'pool').length;
  const out: PoolLine[] = [];
  let hidden = 0;
  compact.forEach((line, i) => {
    if (line.kind === 'pool') out.push(line);
    else if (out.length + headersAfter(i) + 1 < height) out.push(line);
    else if (line.kind === 'slot') hidden++;
  });
  if (hidden > 0) out.push({ kind: 'more', text: `+${hidden} more running` });
  return out.slice(0, height);
}

function PoolHeader({ pool }: { pool: PoolStatus }): ReactNode {
  const busy = pool.slots.filter((s) => s.action).length;
  if (pool.unavailable) {
    return (
      <Row>
        <Text bold>{pool.name}</Text> <Text dimColor>({pool.upstream ?? pool.isas.join(', ')})</Text> <Text color="red">unavailable: {pool.unavailable}</Text>
      </Row>
    );
  }
  return (
    <Row>
      <Text bold>{pool.name}</Text> <Text dimColor>({pool.upstream ?? pool.isas.join(', ')})</Text> <Text color={busy ? 'green' : undefined}>{pool.upstream ? `${busy} in flight` : `${busy}/${pool.slots.length} busy`}</Text> ·{' '}
      <Text color={pool.queueDepth ? 'yellow' : undefined}>{pool.queueDepth} waiting</Text>
    </Row>
  );
}

function SlotLine({ slot, slotWidth, width }: { slot: SlotStatus; slotWidth: number; width: number }): ReactNode {
  const a = slot.action;
  if (!a) {
    return (
      <Row dim>
        {'  '}
        {fit(slot.slot, slotWidth)} idle
      </Row>
    );
  }
  const client = width >= CLIENT_FROM ? formatClient(a.client) : '';
  const argvWidth = Math.max(8, width - 2 - slotWidth - 1 - 9 - 1 - 7 - 2 - (client ? CLIENT_WIDTH + 2 : 0));
  const doing = activity(a);
  return (
    <Row>
      {'  '}
      {fit(slot.slot, slotWidth)} <Text color={PHASE_COLOURS[doing] ?? 'yellow'}>{fit(doing, 9)}</Text>{' '}
      <Text bold>{fit(formatDuration(a.elapsedMs), 7, 'right')}</Text>
      {'  '}
      {fit(formatArgv(a.argv), argvWidth)}
      {client ? <Text dimColor>{`  ${fit(client, CLIENT_WIDTH)}`}</Text> : null}
    </Row>
  );
}

export function CompletionLine({ action, width }: { action: CompletedAction; width: number }): ReactNode {
  const ok = action.cached || (action.status === 'OK' && action.exitCode === 0);
  const client = width >= CLIENT_FROM ? formatClient(action.client) : '';
  const what = outcome(action);
  const argvWidth = Math.max(8, width - 8 - 1 - 2 - 10 - 1 - 7 - 2 - (client ? CLIENT_WIDTH + 2 : 0));
  return (
    <Row>
      <Text dimColor>{formatClock(action.completedAt)}</Text> <Text color={ok ? 'green' : 'red'}>{ok ? '✓' : '✗'}</Text>{' '}
      <Text color={action.cached ? 'cyan' : ok ? undefined : 'red'}>{fit(what, 10)}</Text> {fit(action.cached ? '' : formatDuration(action.durationMs), 7, 'right')}
      {'  '}
      {fit(formatArgv(action.argv), argvWidth)}
      {client ? <Text dimColor>{`  ${fit(client, CLIENT_WIDTH)}`}</Text> : null}
    </Row>
  );
}

function Pools({ execution, width, height }: { execution: ExecutionStatus; width: number; height: number }): ReactNode {
  const lines = planPoolLines(execution.pools, height);
  return (
    <Box flexDirection="column" width={width} height={height}>
      {lines.map((l, i) =>
        l.kind === 'pool' ? (
          <PoolHeader key={i} pool={l.pool} />
        ) : l.kind === 'slot' ? (
          <SlotLine key={i} slot={l.slot} slotWidth={l.slotWidth} width={width} />
        ) : (
          <Row key={i} dim>
            {'  '}
            {l.text}
          </Row>
        ),
      )}
    </Box>
  );
}

function Recent({ execution, width, height }: { execution: ExecutionStatus; width: number; height: number }): ReactNode {
  if (height <= 0) return null;
  const shown = execution.recent.slice(0, height - 1);
  return (
    <Box flexDirection="column" width={width} height={height}>
      <Title>Recently finished</Title>
      {shown.length === 0 ? <Row dim>nothing finished yet</Row> : shown.map((a) => <CompletionLine key={a.operation} action={a} width={width} />)}
    </Box>
  );
}

export interface WorkersViewProps {
  execution: ExecutionStatus | null;
  width: number;
  height: number;
}

/** Each pool's slots and what they run, then the latest completions (beside them when wide). */
export function WorkersView({ execution, width, height }: WorkersViewProps): ReactNode {
  if (!execution) {
    return (
      <Box height={height}>
        <Row dim>Remote execution is disabled in this daemon's config (execution.enabled).</Row>
      </Box>
    );
  }
  if (width >= SIDE_BY_SIDE_FROM) {
    // The left column gets room for the client address; completions take the rest.
    const left = Math.max(Math.floor(width * 0.55), Math.min(width - 60, CLIENT_FROM));
    return (
      <Box width={width} height={height}>
        <Pools execution={execution} width={left} height={height} />
        <Box width={2} />
        <Recent execution={execution} width={width - left - 2} height={height} />
      </Box>
    );
  }
  const wanted = planPoolLines(execution.pools, Number.MAX_SAFE_INTEGER).length;
  // Keep room for the title and at least three completions when the screen allows.
  const poolHeight = Math.max(Math.min(wanted, height - 5), Math.min(wanted, Math.ceil(height / 2)));
  return (
    <Box flexDirection="column" width={width} height={height}>
      <Pools execution={execution} width={width} height={poolHeight} />
      <Row> </Row>
      <Recent execution={execution} width={width} height={height - poolHeight - 1} />
    </Box>
  );
}
