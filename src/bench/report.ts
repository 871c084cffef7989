import { sizeLabel } from './metric.js';
import { formatBytes, formatNumber } from './stats.js';
import type { BenchResult, Comparison, MultiBenchResult } from './types.js';

/** Rows as aligned columns; `right` are the indexes of right-aligned ones. */
function table(rows: string[][], right: ReadonlySet<number>): string[] {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((row) => (row[i] ?? '').length)));
  const out: string[] = [];
  rows.forEach((row, j) => {
    out.push(row.map((cell, i) => (right.has(i) ? cell.padStart(widths[i]!) : cell.padEnd(widths[i]!))).join('  ').trimEnd());
    if (j === 0) out.push(widths.map((w) => '-'.repeat(w)).join('  '));
  });
  return out;
}

const pct = (x: number | null): string => (x === null ? '' : `${x >= 0 ? '+' : ''}${(x * 100).toFixed(1)}%`);
/** 442×, 18.9×, 0.58×, 0.0063× (small ratios keep two significant digits). */
const ratio = (x: number | null): string => (x === null ? 'n/a' : `${x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x >= 0.1 ? x.toFixed(2) : x.toPrecision(2)}×`);

function formatParam(key: string, v: number | string | number[]): string {
  const bytes = /Bytes$/.test(key);
  const one = (x: number | string): string => (bytes && typeof x === 'number' ? sizeLabel(x) : String(x));
  return `${key}=${Array.isArray(v) ? v.map(one).join(',') : one(v)}`;
}

const hostLine = (h: BenchResult['host']): string =>
  `host: ${h.cpus} × ${h.cpuModel}, ${formatBytes(h.totalMemBytes)}, node ${h.node} ${h.platform}/${h.arch}, load average ${h.loadAvg.join(' ')}${h.loadAvgEnd ? ` at the start, ${h.loadAvgEnd.join(' ')} at the end` : ''}`;

/** The result as tables for a terminal. */
export function formatReport(r: BenchResult): string {
  const lines: string[] = [];
  lines.push(hostLine(r.host));
  lines.push(`target: ${r.target.endpoint}${r.target.instance ? ` instance "${r.target.instance}"` : ''}: ${r.target.note}`);
  lines.push(`figures: medians of ${r.repeat} repetition${r.repeat === 1 ? '' : 's'}; ratio = figure / baseline measured in the same run (for ms, lower is better; for rates, higher)`);
  for (const s of r.suites) {
    const params = Object.entries(s.params)
      .map(([k, v]) => formatParam(k, v))
      .join(' ');
    lines.push('', `${s.name}${s.status === 'ok' ? '' : ` (${s.status})`}${params ? `: ${params}` : ''}`);
    if (s.metrics.length > 0) {
      const notes: string[] = [];
      const note = (label: string): string => {
        let i = notes.indexOf(label);
        if (i < 0) i = notes.push(label) - 1;
        return `[${i + 1}]`;
      };
      const rows = [['metric', 'size', 'c', 'value', 'unit', 'baseline', '', 'ratio']];
      for (const m of s.metrics) {
        rows.push([
          m.label,
          m.sizeBytes === undefined ? '' : sizeLabel(m.sizeBytes),
          String(m.concurrency),
          formatNumber(m.value),
          m.unit,
          m.baseline ? formatNumber(m.baseline.value) : 'n/a',
          m.baseline ? note(m.baseline.label) : '',
          ratio(m.ratio),
        ]);
      }
      lines.push(...table(rows, new Set([2, 3, 5, 7])));
      notes.forEach((n, i) => lines.push(`[${i + 1}] ${n}`));
    }
    for (const u of s.unsupported) lines.push(`unsupported: ${u.what}: ${u.reason}`);
    const checks = Object.entries(s.checks);
    if (checks.length) lines.push(`checks: ${checks.map(([k, v]) => `${k}=${v}`).join(' ')}`);
  }
  if (r.comparison) lines.push('', ...formatComparison(r.comparison));
  lines.push('', `baselines: ${r.baselines}`, `took ${r.durationSeconds.toFixed(1)} s`);
  return lines.join('\n');
}

/** This run against an earlier one. */
export function formatComparison(c: Comparison): string[] {
  const lines = [`compared with ${c.file} (run ${c.startedAt}, load average ${c.loadAvg.join(' ')}); the verdict goes by the ratio to the baseline where both runs have one, changes under 5 % count as the same`];
  if (c.rows.length === 0) lines.push('no metric in common');
  else {
    const rows = [['metric', 'before', 'after', 'unit', 'change', 'ratio before', 'ratio after', 'ratio change', 'verdict']];
    for (const row of c.rows) {
      rows.push([row.id, formatNumber(row.before), formatNumber(row.after), row.unit, pct(row.change), ratio(row.ratioBefore), ratio(row.ratioAfter), pct(row.ratioChange), row.verdict]);
    }
    lines.push(...table(rows, new Set([1, 2, 4, 5, 6, 7])));
  }
  if (c.onlyBefore.length) lines.push(`only in the earlier run: ${c.onlyBefore.join(', ')}`);
  if (c.onlyAfter.length) lines.push(`only in this run: ${c.onlyAfter.join(', ')}`);
  return lines;
}

/**
 * Several endpoints side by side: a row per metric, per endpoint its figure with its ratio to
 * its own same-run baseline in brackets, then each endpoint's figure over the first's.
 */
export function formatMultiReport(r: MultiBenchResult): string {
  const labels = r.endpoints.map((e) => e.label);
  const first = labels[0]!;
  const lines = [hostLine(r.host)];
  for (const e of r.endpoints) lines.push(`${e.label}: ${e.result.target.endpoint}${e.result.target.instance ? ` instance "${e.result.target.instance}"` : ''}: ${e.result.target.note}`);
  lines.push(
    `figures: medians of ${r.repeat} repetition${r.repeat === 1 ? '' : 's'}, the endpoints interleaved (each repetition runs every suite on ${labels.join(', then ')}); ` +
      `(×N) = the figure over its own baseline measured in the same run; ${labels.length > 1 ? `X/${first} = X's figure over ${first}'s` : ''} (for ms, lower is better; for rates, higher)`,
    '',
  );
  const head = ['metric', 'unit', ...labels, ...labels.slice(1).map((l) => `${l}/${first}`)];
  const rows = [head];
  for (const row of r.rows) {
    const cells = row.cells.map((c) => (c.status === 'measured' ? `${formatNumber(c.value!)}${c.baselineRatio === null ? '' : ` (${ratio(c.baselineRatio)})`}` : c.status === 'unsupported' ? 'unsupported' : '-'));
    rows.push([row.id, row.unit, ...cells, ...row.cells.slice(1).map((c) => (c.ratioToFirst === null ? 'n/a' : ratio(c.ratioToFirst)))]);
  }
  lines.push(...table(rows, new Set(head.map((_, i) => i).filter((i) => i >= 2))));
  for (const e of r.endpoints) {
    for (const s of e.result.suites) for (const u of s.unsupported) lines.push(`unsupported on ${e.label}: ${s.name}: ${u.what}: ${u.reason}`);
  }
  lines.push('', `baselines: ${r.baselines}`, `took ${r.durationSeconds.toFixed(1)} s`);
  return lines.join('\n');
}
