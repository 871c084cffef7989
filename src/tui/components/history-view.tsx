import { Box, Text } from 'ink';
import type { ReactNode } from 'react';
import { phaseDurations, type HistoryEntry } from '../../history/entry.js';
import { durationText, outcomeText, shortDigest, whatText, whenText } from '../../history/render.js';
import { formatBytes, formatClient, formatDuration, fit, truncate } from '../../status/format.js';
import { shellQuote } from '../../util/shell-quote.js';
import type { HistoryFeedState } from '../history-feed.js';
import { Row, Title } from './row.js';

export interface HistoryViewProps {
  state: HistoryFeedState | undefined;
  width: number;
  height: number;
  now?: number;
}

const colourOf = (e: HistoryEntry): string | undefined => (e.failed ? 'red' : e.kind === 'lookup' ? (e.outcome === 'miss' ? 'yellow' : undefined) : e.outcome === 'cached' ? 'green' : undefined);

function EntryRow({ e, selected, width, now }: { e: HistoryEntry; selected: boolean; width: number; now?: number }): ReactNode {
  const when = fit(whenText(e.at, now), 8);
  const line = `${when}  ${fit(outcomeText(e), 11)} ${fit(durationText(e), 6, 'right')}  ${shortDigest(e.action)}  ${whatText(e)}`;
  return (
    <Text wrap="truncate-end" inverse={selected} color={colourOf(e)} bold={e.failed}>
      {fit(line, width)}
    </Text>
  );
}

/** The selected entry: how it ended, who asked, the command, the phases, and the end of stderr (or stdout). */
function Details({ e, state, width, height }: { e: HistoryEntry; state: HistoryFeedState; width: number; height: number }): ReactNode {
  const d = state.details?.id === e.id ? state.details : undefined;
  const lines: Array<{ text: string; color?: string; dim?: boolean; bold?: boolean }> = [];
  const r = e.request;
  const head = [outcomeText(e) + (e.status.message ? `: ${e.status.message}` : ''), whenText(e.at), e.worker ? `on ${e.worker}` : '', formatClient(e.client.peer) + (e.client.identity ? ` (${e.client.identity})` : '')].filter(Boolean).join(' · ');
  lines.push({ text: head, color: colourOf(e), bold: true });
  const said = r ? [r.tool && `${r.tool}${r.toolVersion ? ` ${r.toolVersion}` : ''}`, r.targetId, r.mnemonic, r.invocationId && `invocation ${r.invocationId}`].filter(Boolean).join(' · ') : '';
  if (said) lines.push({ text: said, dim: true });
  lines.push({ text: `action ${e.action}${e.operation ? ` · ${e.operation}` : ''}`, dim: true });
  const argv = d?.show?.command?.arguments ?? e.argv;
  if (argv?.length) lines.push({ text: `$ ${argv.map(shellQuote).join(' ')}` });
  const p = phaseDurations(e.timings);
  const phases = (['queued', 'staging', 'running', 'uploading'] as const).flatMap((k) => (p[k] === undefined ? [] : [`${k} ${formatDuration(p[k]!)}`]));
  if (phases.length) lines.push({ text: phases.join(' · '), dim: true });
  const ir = d?.show?.inputRoot;
  if (ir) lines.push({ text: `inputs: ${Number(ir.files)} files, ${formatBytes(Number(ir.bytes))}${e.outputs ? ` · outputs: ${e.outputs.files + e.outputs.directories} (${formatBytes(e.outputs.bytes)})` : ''}`, dim: true });
  if (!d) lines.push({ text: 'loading…', dim: true });
  else if (d.error) lines.push({ text: d.error, color: 'red' });
  else if (d.show) {
    if (d.show.missing?.length) lines.push({ text: `no longer in the CAS: ${d.show.missing.join(', ')}`, color: 'yellow' });
    const log = d.show.stderr && Number(d.show.stderr.size) > 0 ? ['stderr', d.show.stderr] as const : d.show.stdout && Number(d.show.stdout.size) > 0 ? ['stdout', d.show.stdout] as const : undefined;
    if (log) {
      const [name, t] = log;
      const room = Math.max(1, height - lines.length - 1);
      const text = t.present ? Buffer.from(t.tail ?? new Uint8Array()).toString('utf8').replace(/\n$/, '').split('\n').slice(-room) : ['(no longer in the CAS)'];
      lines.push({ text: `${name} (${formatBytes(Number(t.size))}), the end:`, dim: true });
      for (const l of text) lines.push({ text: `  ${l}`, color: name === 'stderr' && e.failed ? 'red' : undefined });
    }
  }
  return (
    <Box flexDirection="column" height={height}>
      {lines.slice(0, height).map((l, i) => (
        <Text key={i} wrap="truncate-end" color={l.color} dimColor={l.dim} bold={l.bold}>
          {truncate(l.text, width) || ' '}
        </Text>
      ))}
    </Box>
  );
}

/**
 * Recent actions, newest first, failures in red, the selected one highlighted; below, what
 * `reexec show` says of it and the end of its stderr.
 */
export function HistoryView({ state, width, height, now }: HistoryViewProps): ReactNode {
  if (!state) {
    return (
      <Box height={height}>
        <Row dim>The action history is not available from this daemon.</Row>
      </Box>
    );
  }
  if (state.error && state.entries.length === 0) {
    return (
      <Box height={height}>
        <Text color="red" wrap="truncate-end">
          {state.error}
        </Text>
      </Box>
    );
  }
  if (state.entries.length === 0) {
    return (
      <Box height={height}>
        <Row dim>{!state.loaded ? 'Loading the history…' : state.failedOnly ? 'No failed action in the history (f shows every action).' : 'Nothing recorded yet: actions appear here as clients run or look them up.'}</Row>
      </Box>
    );
  }
  const listHeight = Math.max(3, Math.min(state.entries.length + 1, Math.floor(height * 0.45)));
  const detailHeight = Math.max(1, height - listHeight - 1);
  const rows = listHeight - 1;
  const sel = (() => {
    const i = state.selectedId ? state.entries.findIndex((e) => e.id === state.selectedId) : -1;
    return i >= 0 ? i : 0;
  })();
  // Keep the selection in view: scroll so it sits in the window.
  const first = Math.max(0, Math.min(sel - Math.floor(rows / 2), state.entries.length - rows));
  const shown = state.entries.slice(first, first + rows);
  const selected = state.entries[sel]!;
  return (
    <Box flexDirection="column" width={width} height={height}>
      <Title>{fit(`${fit('TIME', 8)}  ${fit('RESULT', 11)} ${fit('TOOK', 6, 'right')}  ${fit('ACTION', 12)}  WHAT${state.failedOnly ? '   (failed only)' : ''}`, width)}</Title>
      {shown.map((e) => (
        <EntryRow key={e.id} e={e} selected={e.id === selected.id} width={width} now={now} />
      ))}
      {Array.from({ length: Math.max(0, rows - shown.length) }, (_, i) => (
        <Row key={`blank-${i}`}> </Row>
      ))}
      <Text dimColor>{'╌'.repeat(width)}</Text>
      <Details e={selected} state={state} width={width} height={detailHeight} />
    </Box>
  );
}

/** The keys of the History view, for the footer. */
export function historyKeys(state: HistoryFeedState | undefined, width: number): string {
  const n = state?.entries.length ?? 0;
  const pos = state && n ? `${(state.selectedId ? state.entries.findIndex((e) => e.id === state.selectedId) : 0) + 1}/${n}` : '';
  const keys = width >= 78 ? `↑↓/j k select · g newest · f ${state?.failedOnly ? 'every action' : 'failed only'}` : `↑↓ · g · f`;
  return pos ? `${keys} · ${pos}` : keys;
}
