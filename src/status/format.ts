/** Formatting shared by the plain-text snapshot and the dashboard. */
import { formatBytes } from '../util/format-bytes.js';
import type { ConnectionStats, UpstreamLookups, UpstreamStatus } from './status-snapshot.js';

export { formatBytes, formatByteRate } from '../util/format-bytes.js';

/** 0.3 → "<1ms", 850 → "850ms", 12345 → "12.3s", 245000 → "4m05s", 7980000 → "2h13m", 3 days → "3d04h". */
export function formatDuration(ms: number): string {
  if (ms > 0 && ms < 0.5) return '<1ms';
  if (ms < 1000) return `${Math.round(ms)}ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)}s`;
  const total = Math.floor(s);
  const pad = (x: number): string => String(x).padStart(2, '0');
  if (total < 3600) return `${Math.floor(total / 60)}m${pad(total % 60)}s`;
  if (total < 86400) return `${Math.floor(total / 3600)}h${pad(Math.floor((total % 3600) / 60))}m`;
  return `${Math.floor(total / 86400)}d${pad(Math.floor((total % 86400) / 3600))}h`;
}

/** 0.734 → "73%"; null → "–". */
export function formatPercent(r: number | null | undefined): string {
  return r === null || r === undefined ? '–' : `${Math.round(r * 100)}%`;
}

/** A per-second rate from a count over a window: "4.2/s", "0.05/s". */
export function formatRate(count: number, seconds: number): string {
  const r = seconds > 0 ? count / seconds : 0;
  return `${r >= 10 ? r.toFixed(0) : r >= 0.1 ? r.toFixed(1) : r === 0 ? '0' : r.toFixed(2)}/s`;
}

/** "12:04:05" in local time. */
export function formatClock(iso: string): string {
  const d = new Date(iso);
  const pad = (x: number): string => String(x).padStart(2, '0');
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** Cut to `width` characters, ending with "…" when cut. */
export function truncate(text: string, width: number): string {
  if (width <= 0) return '';
  const chars = [...text];
  return chars.length <= width ? text : `${chars.slice(0, Math.max(0, width - 1)).join('')}…`;
}

/** Pad or cut to exactly `width` characters. */
export function fit(text: string, width: number, align: 'left' | 'right' = 'left'): string {
  const t = truncate(text, width);
  const pad = ' '.repeat(Math.max(0, width - [...t].length));
  return align === 'left' ? t + pad : pad + t;
}

/** A command line for display: words joined, newlines shown as "⏎". */
export function formatArgv(argv: readonly string[]): string {
  return argv.length === 0 ? '(command unknown)' : argv.map((w) => w.replace(/\n/g, '⏎')).join(' ');
}

/** "ipv4:127.0.0.1:41234" → "127.0.0.1:41234"; "unix:..." stays. */
export function formatClient(client: string | undefined): string {
  if (!client) return '';
  return client.replace(/^ipv[46]:/, '');
}

const BARS = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/**
 * A sparkline of the last `width` values: blank for zero (or null: no data), then eight
 * heights scaled to the largest value shown; or, given `max` (1 for ratios), scaled to it,
 * with 0 drawn as the lowest bar and only null left blank.
 */
export function sparkline(values: ReadonlyArray<number | null>, width: number, max?: number): string {
  const shown = values.slice(Math.max(0, values.length - width));
  const top = max ?? Math.max(0, ...shown.map((v) => v ?? 0));
  const line = shown
    .map((v) => {
      if (v === null) return ' ';
      // A ratio of 0 is a measurement (every lookup missed), unlike a second with no lookups.
      if (v <= 0 || top <= 0) return max !== undefined && v === 0 ? BARS[0]! : ' ';
      return BARS[Math.min(BARS.length - 1, Math.max(0, Math.ceil((v / top) * BARS.length) - 1))]!;
    })
    .join('');
  return line.padStart(Math.max(0, width), ' ');
}

/** A bar `width` wide filled to `ratio` (0..1): "█████░░░░░". */
export function bar(ratio: number, width: number): string {
  const filled = Math.max(0, Math.min(width, Math.round(ratio * width)));
  return '█'.repeat(filled) + '░'.repeat(Math.max(0, width - filled));
}

/** Per-second hit ratios (null where nothing was looked up). */
export function hitRatios(hits: readonly number[], misses: readonly number[]): Array<number | null> {
  return hits.map((h, i) => {
    const total = h + (misses[i] ?? 0);
    return total > 0 ? h / total : null;
  });
}

/** "12 open (3 in handshake) from 4 clients · limits 512, 256 per client · since start: 1 refused, 2 handshake timeouts, 5 idle closed". */
export function formatConnections(c: ConnectionStats): string {
  const limit = (n: number): string => (n > 0 ? String(n) : 'none');
  const refused = c.refused.maxConnections + c.refused.maxConnectionsPerClient;
  return (
    `${c.open} open${c.handshaking ? ` (${c.handshaking} in handshake)` : ''} from ${c.clients} client${c.clients === 1 ? '' : 's'}` +
    ` · limits ${limit(c.limits.maxConnections)}, ${limit(c.limits.maxConnectionsPerClient)} per client` +
    ` · since start: ${refused} refused, ${c.closed.handshakeTimeout} handshake timeouts, ${c.closed.idle} idle closed`
  );
}

/** What to say about the disk reserve, when it is worth saying (released, or the disk is full); else undefined. */
export function formatReserve(r: { bytes: number; present: boolean; critical: boolean } | undefined): string | undefined {
  if (!r || r.bytes <= 0 || (r.present && !r.critical)) return undefined;
  if (r.critical) return `the disk is full: only deletions write; disk reserve ${formatBytes(r.bytes)} ${r.present ? 'in place' : 'released for eviction'}`;
  return `disk reserve ${formatBytes(r.bytes)} released: re-created once there is room`;
}

/** "up since 12:03", "DOWN since 12:05: <error>": the upstream's health in one line. */
export function formatUpstreamHealth(u: UpstreamStatus): string {
  const state = u.state === 'up' ? 'up' : u.state.toUpperCase();
  const since = u.since ? ` since ${formatClock(u.since)}` : '';
  const why = u.state !== 'up' && u.lastError ? `: ${u.lastError}` : '';
  return `${u.url}${u.instance ? ` (instance ${u.instance})` : ''} ${state}${since}${why}`;
}

/** "62% local, 30% upstream, 8% miss (1234 lookups)". */
export function formatUpstreamLookups(l: UpstreamLookups): string {
  const total = l.local + l.upstream + l.miss;
  if (total === 0) return 'no lookups yet';
  const pct = (n: number): string => `${Math.round((n / total) * 100)}%`;
  const down = l.upstreamDown ? `, ${l.upstreamDown} not asked (upstream down)` : '';
  const incomplete = l.incomplete ? `, ${l.incomplete} incomplete upstream` : '';
  return `${pct(l.local)} local, ${pct(l.upstream)} upstream, ${pct(l.miss)} miss (${total} lookups${down}${incomplete})`;
}

/** "3 blobs (1.2 MiB), 1 action result pending · 120 done, 0 dropped, 0 failed". */
export function formatUpstreamQueue(u: UpstreamStatus): string {
  const q = u.queue;
  if (!q) return 'off (upstream.push: false)';
  const pending = q.blobs + q.actionResults + q.assets;
  const what = pending ? `${q.blobs} blobs (${formatBytes(q.blobBytes)}), ${q.actionResults} action results, ${q.assets} assets pending${q.oldestAt ? ` since ${formatClock(q.oldestAt)}` : ''}` : 'empty';
  return `${what} · ${q.done} done, ${q.dropped} dropped, ${q.failed} failed`;
}
