import { median } from './stats.js';
import type { Metric, SuiteName } from './types.js';

export interface MetricSpec {
  suite: SuiteName;
  name: string;
  label: string;
  unit: string;
  better: 'higher' | 'lower';
  concurrency: number;
  sizeBytes?: number;
  /** Distinguishes metrics of one name beyond size and concurrency (e.g. "first", "again"). */
  variant?: string;
  samples: number[];
  baseline?: { name: string; label: string; samples: number[] };
}

/** A metric from its per-repetition samples and its baseline's (medians, ratio, id). */
export function makeMetric(s: MetricSpec): Metric {
  const value = median(s.samples);
  const base = s.baseline && s.baseline.samples.length > 0 ? median(s.baseline.samples) : undefined;
  const idParts = [s.suite, s.name, s.variant, s.sizeBytes === undefined ? undefined : sizeLabel(s.sizeBytes), `c${s.concurrency}`].filter((x) => x !== undefined);
  return {
    id: idParts.join('/'),
    name: s.name,
    label: s.label,
    concurrency: s.concurrency,
    ...(s.sizeBytes === undefined ? {} : { sizeBytes: s.sizeBytes }),
    value,
    unit: s.unit,
    better: s.better,
    baseline: s.baseline && base !== undefined ? { name: s.baseline.name, label: s.baseline.label, value: base, unit: s.unit } : null,
    ratio: base !== undefined && base !== 0 ? value / base : null,
    samples: s.samples,
    baselineSamples: s.baseline?.samples ?? [],
  };
}

/** 100 → "100B", 65536 → "64KiB", 1073741824 → "1GiB" (ids and labels). */
export function sizeLabel(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = bytes;
  while (v >= 1024 && v % 1024 === 0 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v}${units[i]}`;
}

/** The same metric measured in several runs (repetitions) as one: samples in run order, medians and ratio recomputed. */
export function mergeMetricRuns(runs: readonly Metric[]): Metric {
  const first = runs[0]!;
  const samples = runs.flatMap((m) => m.samples);
  const baselineSamples = runs.flatMap((m) => m.baselineSamples);
  const value = median(samples);
  const base = first.baseline && baselineSamples.length > 0 ? median(baselineSamples) : undefined;
  return {
    ...first,
    value,
    baseline: first.baseline && base !== undefined ? { ...first.baseline, value: base } : null,
    ratio: base !== undefined && base !== 0 ? value / base : null,
    samples,
    baselineSamples,
  };
}
