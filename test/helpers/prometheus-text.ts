/**
 * A strict parser of the Prometheus text exposition format (0.0.4), for tests that scrape
 * /metrics: every sample must belong to a family announced by # TYPE, label values are
 * unescaped, and histograms must be cumulative with +Inf equal to _count.
 */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface Exposition {
  types: Map<string, string>;
  samples: Sample[];
  /** Sum of the samples named `name` whose labels include `labels`. */
  value(name: string, labels?: Record<string, string>): number;
  /** A histogram's series: buckets by upper bound, sum and count. */
  histogram(name: string, labels?: Record<string, string>): { buckets: Map<string, number>; sum: number; count: number };
}

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)( -?\d+)?$/;
const LABEL = /\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(,|$)/y;

function parseLabels(text: string, line: string): Record<string, string> {
  const labels: Record<string, string> = {};
  LABEL.lastIndex = 0;
  while (LABEL.lastIndex < text.length) {
    const m = LABEL.exec(text);
    if (!m) throw new Error(`bad labels in: ${line}`);
    labels[m[1]!] = m[2]!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
  }
  return labels;
}

const FAMILY_SUFFIXES = ['_bucket', '_sum', '_count'];

export function parsePrometheusText(text: string): Exposition {
  const types = new Map<string, string>();
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('# HELP ')) continue;
    if (line.startsWith('# TYPE ')) {
      const [, , name, type] = line.split(' ');
      if (!name || !['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(type ?? '')) throw new Error(`bad TYPE line: ${line}`);
      types.set(name, type!);
      continue;
    }
    if (line.startsWith('#')) continue;
    const m = SAMPLE.exec(line);
    if (!m) throw new Error(`not a sample line: ${line}`);
    const name = m[1]!;
    const family = types.has(name) ? name : FAMILY_SUFFIXES.map((s) => (name.endsWith(s) ? name.slice(0, -s.length) : '')).find((f) => f && types.has(f));
    if (!family) throw new Error(`sample of an undeclared family: ${line}`);
    // Prometheus reads values with Go's ParseFloat: NaN and Inf in any case.
    const raw = m[4]!.toLowerCase();
    const value = raw === '+inf' || raw === 'inf' ? Infinity : raw === '-inf' ? -Infinity : raw === 'nan' ? NaN : Number(raw);
    if (Number.isNaN(value) && raw !== 'nan') throw new Error(`bad value: ${line}`);
    samples.push({ name, labels: m[3] ? parseLabels(m[3], line) : {}, value });
  }
  const matching = (name: string, labels: Record<string, string>): Sample[] =>
    samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  const exposition: Exposition = {
    types,
    samples,
    value: (name, labels = {}) => {
      if (!samples.some((s) => s.name === name)) throw new Error(`no samples named ${name}`);
      return matching(name, labels).reduce((a, s) => a + s.value, 0);
    },
    histogram: (name, labels = {}) => {
      if (types.get(name) !== 'histogram') throw new Error(`${name} is not a histogram`);
      const buckets = new Map<string, number>();
      for (const s of matching(`${name}_bucket`, labels)) buckets.set(s.labels['le']!, (buckets.get(s.labels['le']!) ?? 0) + s.value);
      const count = matching(`${name}_count`, labels).reduce((a, s) => a + s.value, 0);
      const sum = matching(`${name}_sum`, labels).reduce((a, s) => a + s.value, 0);
      const ordered = [...buckets].sort(([a], [b]) => Number(a === '+Inf' ? Infinity : a) - Number(b === '+Inf' ? Infinity : b));
      for (let i = 1; i < ordered.length; i++) if (ordered[i]![1] < ordered[i - 1]![1]) throw new Error(`${name}: buckets are not cumulative`);
      if (buckets.size > 0 && buckets.get('+Inf') !== count) throw new Error(`${name}: +Inf bucket ${buckets.get('+Inf')} ≠ count ${count}`);
      return { buckets, sum, count };
    },
  };
  return exposition;
}
