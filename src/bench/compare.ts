import { readFileSync } from 'node:fs';
import { validateBenchResult } from './result-schema.js';
import type { BenchResult, Comparison, ComparisonRow, Metric } from './types.js';

/** Changes smaller than this (5 %) are reported as the same: single runs on shared machines are noisy. */
export const SAME_WITHIN = 0.05;

export class CompareFileError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CompareFileError';
  }
}

/** An earlier `reexec bench --json` output, checked against the schema. */
export function loadEarlierResult(file: string): BenchResult {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new CompareFileError(`--compare ${file}: cannot read it: ${(err as Error).message}`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new CompareFileError(`--compare ${file}: not JSON (${(err as Error).message}); pass a file written by \`reexec bench --json\``);
  }
  const errors = validateBenchResult(value);
  if (errors.length > 0) {
    throw new CompareFileError(`--compare ${file}: not a reexec bench result (${errors.slice(0, 3).join('; ')}${errors.length > 3 ? `; ${errors.length - 3} more` : ''})`);
  }
  return value as BenchResult;
}

const metricsById = (r: BenchResult): Map<string, Metric> => new Map(r.suites.flatMap((s) => s.metrics.map((m) => [m.id, m] as const)));

/**
 * This run against an earlier one, metric by metric (matched by id). The verdict goes by the
 * ratio to the baseline when both runs have one, since both runs' baselines absorb how fast
 * the machine was at the time; else by the value.
 */
export function compareResults(before: BenchResult, after: BenchResult, file: string): Comparison {
  const old = metricsById(before);
  const now = metricsById(after);
  const rows: ComparisonRow[] = [];
  for (const [id, m] of now) {
    const b = old.get(id);
    if (!b) continue;
    const change = m.value / b.value - 1;
    const ratioChange = m.ratio !== null && b.ratio !== null && b.ratio !== 0 ? m.ratio / b.ratio - 1 : null;
    const judged = ratioChange ?? change;
    const gain = m.better === 'higher' ? judged : -judged;
    rows.push({
      id,
      label: m.label,
      unit: m.unit,
      before: b.value,
      after: m.value,
      change,
      ratioBefore: b.ratio,
      ratioAfter: m.ratio,
      ratioChange,
      verdict: Math.abs(judged) < SAME_WITHIN ? 'same' : gain > 0 ? 'better' : 'worse',
    });
  }
  return {
    file,
    startedAt: before.startedAt,
    loadAvg: before.host.loadAvg,
    rows,
    onlyBefore: [...old.keys()].filter((id) => !now.has(id)),
    onlyAfter: [...now.keys()].filter((id) => !old.has(id)),
  };
}
