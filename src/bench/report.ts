import { formatBytes, formatNumber } from './stats.js';
import type { BenchResult } from './types.js';

/** The result as a table for a terminal. */
export function formatReport(r: BenchResult): string {
  const lines: string[] = [];
  const h = r.host;
  lines.push(`host: ${h.cpus} × ${h.cpuModel}, ${formatBytes(h.totalMemBytes)}, node ${h.node} ${h.platform}/${h.arch}, load ${h.loadAvg.join(' ')}`);
  lines.push(`target: ${r.target.endpoint}${r.target.instance ? ` instance "${r.target.instance}"` : ''}: ${r.target.note}`);
  for (const s of r.suites) {
    const params = Object.entries(s.params)
      .map(([k, v]) => `${k}=${k.endsWith('Bytes') && typeof v === 'number' ? formatBytes(v) : v}`)
      .join(' ');
    lines.push('', `${s.name} (${params}); median of ${r.repeat}`);
    const rows = [['metric', 'value', 'unit', 'baseline', 'baseline value', 'ratio']];
    for (const m of s.metrics) rows.push([m.label, formatNumber(m.value), m.unit, m.baseline.label, formatNumber(m.baseline.value), `${m.ratio.toFixed(2)}×`]);
    const widths = rows[0]!.map((_, i) => Math.max(...rows.map((row) => row[i]!.length)));
    const right = new Set([1, 4, 5]);
    rows.forEach((row, j) => {
      lines.push(row.map((cell, i) => (right.has(i) ? cell.padStart(widths[i]!) : cell.padEnd(widths[i]!))).join('  ').trimEnd());
      if (j === 0) lines.push(widths.map((w) => '-'.repeat(w)).join('  '));
    });
    lines.push(
      'checks: ' +
        Object.entries(s.checks)
          .map(([k, v]) => `${k}=${v}`)
          .join(' '),
    );
  }
  lines.push('', `baselines: ${r.baselines}`, `took ${r.durationSeconds.toFixed(1)} s`);
  return lines.join('\n');
}
