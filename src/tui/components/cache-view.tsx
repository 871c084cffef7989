import { Box, Text } from 'ink';
import type { ReactNode } from 'react';
import { bar, formatBytes, formatByteRate, formatConnections, formatDuration, formatUpstreamHealth, formatUpstreamLookups, formatUpstreamQueue, formatPercent, formatRate, formatReserve, fit, hitRatios, formatClock } from '../../status/format.js';
import type { StatusSnapshot } from '../../status/status-snapshot.js';
import { Row, Title } from './row.js';
import { SparklineRow } from './sparkline-row.js';

export interface CacheViewProps {
  snapshot: StatusSnapshot;
  width: number;
  height: number;
}

const LABEL = 13;

/** Whether the cache helps (hit rate), how full the store is, and the RPC traffic. */
export function CacheView({ snapshot, width, height }: CacheViewProps): ReactNode {
  const { ac, cas } = snapshot.cache;
  const rpc = snapshot.rpc;
  const perSecond = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
  const limit = cas.budgetBytes ?? (cas.disk ? cas.bytes + cas.disk.freeBytes : null);
  const ratio = limit ? cas.bytes / limit : 0;
  const barWidth = Math.max(10, Math.min(40, width - 60));
  const rows: ReactNode[] = [
    <Row key="ac">
      <Text bold>{fit('Action cache', LABEL)}</Text>  <Text color="green" bold>{formatPercent(ac.hitRate)}</Text> hits since start ({ac.hits} hits, {ac.misses} misses) · {ac.entries}{' '}
      entries
    </Row>,
    <SparklineRow key="acs" label="  hit rate/s" labelWidth={LABEL} values={hitRatios(ac.perSecond.hits, ac.perSecond.misses)} max={1} value={`${formatPercent(ac.lastMinute.hitRate)} last min`} width={width} color="green" />,
    <Row key="gap1"> </Row>,
    <Row key="cas">
      <Text bold>{fit('CAS', LABEL)}</Text>  {cas.blobs.toLocaleString('en-US')} blobs · {formatBytes(cas.bytes)}
      {cas.budgetBytes !== null ? ` of ${formatBytes(cas.budgetBytes)} budget` : ' (no budget configured)'}
    </Row>,
    <Row key="bar">
      {fit('', LABEL)}  <Text color={ratio > 0.9 ? 'red' : ratio > 0.75 ? 'yellow' : 'green'}>{bar(ratio, barWidth)}</Text> {formatPercent(ratio)}{' '}
      {cas.budgetBytes !== null ? 'of budget' : 'of what the disk allows'}
    </Row>,
    <Row key="disk" dim>
      {fit('', LABEL)}  {cas.disk ? `disk: ${formatBytes(cas.disk.freeBytes)} free of ${formatBytes(cas.disk.totalBytes)}` : 'disk: unknown'}
      {snapshot.gc ? ` · last GC ${formatClock(snapshot.gc.at)}: ${formatBytes(snapshot.gc.evictedBytes)} freed in ${formatDuration(snapshot.gc.durationSeconds * 1000)}` : ''}
    </Row>,
    ...(formatReserve(cas.reserve)
      ? [
          <Row key="reserve">
            {fit('', LABEL)}  <Text color="red">{formatReserve(cas.reserve)}</Text>
          </Row>,
        ]
      : []),
    <Row key="gap2"> </Row>,
    ...(snapshot.upstream
      ? [
          <Row key="upstream">
            <Text bold>{fit('Upstream', LABEL)}</Text>  <Text color={snapshot.upstream.state === 'up' ? undefined : 'red'}>{formatUpstreamHealth(snapshot.upstream)}</Text>
          </Row>,
          <Row key="upstream-hits">
            {fit('', LABEL)}  CAS {formatUpstreamLookups(snapshot.upstream.cas)} · AC {formatUpstreamLookups(snapshot.upstream.ac)}
          </Row>,
          <Row key="upstream-queue">
            {fit('', LABEL)}  {formatBytes(snapshot.upstream.bytesDown)} down, {formatBytes(snapshot.upstream.bytesUp)} up · queue {formatUpstreamQueue(snapshot.upstream)}
          </Row>,
        ]
      : []),
    ...(snapshot.connections
      ? [
          <Row key="conn">
            <Text bold>{fit('Connections', LABEL)}</Text>  {formatConnections(snapshot.connections)}
          </Row>,
        ]
      : []),
    <Row key="rpc">
      <Text bold>{fit('RPCs (1 min)', LABEL)}</Text>  {rpc.calls} calls · {rpc.misses} misses · <Text color={rpc.errors ? 'red' : undefined}>{rpc.errors} errors</Text> · in{' '}
      {formatBytes(rpc.bytesIn)} · out {formatBytes(rpc.bytesOut)}
    </Row>,
    <SparklineRow key="calls" label="  calls/s" labelWidth={LABEL} values={rpc.perSecond.calls} value={formatRate(rpc.calls, rpc.windowSeconds)} width={width} />,
    <SparklineRow key="in" label="  in/s" labelWidth={LABEL} values={rpc.perSecond.bytesIn} value={formatByteRate(perSecond(rpc.perSecond.bytesIn))} width={width} color="magenta" />,
    <SparklineRow key="out" label="  out/s" labelWidth={LABEL} values={rpc.perSecond.bytesOut} value={formatByteRate(perSecond(rpc.perSecond.bytesOut))} width={width} color="blue" />,
  ];
  const methodRoom = height - rows.length - 2;
  if (methodRoom > 0 && rpc.methods.length > 0) {
    // Columns: calls, misses, errors (6 each), mean (7), two spaces before each.
    const nameWidth = Math.max(12, Math.min(48, width - 2 - 4 * 2 - 3 * 6 - 7, Math.max(...rpc.methods.map((m) => m.method.length))));
    rows.push(<Row key="gap3"> </Row>);
    rows.push(
      <Title key="mh">
        {fit('  method', nameWidth + 2)}  {fit('calls', 6, 'right')}  {fit('misses', 6, 'right')}  {fit('errors', 6, 'right')}  {fit('mean', 7, 'right')}
      </Title>,
    );
    for (const m of rpc.methods.slice(0, methodRoom)) {
      rows.push(
        <Row key={m.method}>
          {'  '}
          {fit(m.method, nameWidth)}  {fit(String(m.calls), 6, 'right')}  {fit(String(m.misses ?? 0), 6, 'right')}  <Text color={m.errors ? 'red' : undefined}>{fit(String(m.errors), 6, 'right')}</Text>
          {'  '}
          {fit(formatDuration(m.meanMs), 7, 'right')}
        </Row>,
      );
    }
  }
  return (
    <Box flexDirection="column" width={width} height={height}>
      {rows.slice(0, height)}
    </Box>
  );
}
