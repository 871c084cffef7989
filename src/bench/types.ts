/** The machine-readable result of `reexec bench` (what `--json` prints; see result-schema.ts). */

export const SUITE_NAMES = ['cas-small', 'cas-large', 'ac', 'exec', 'history'] as const;
export type SuiteName = (typeof SUITE_NAMES)[number];
/**
 * What `--suite all` runs: every suite that measures the target. `history` compares two
 * daemons of its own (the action history on and off) and runs only when asked for.
 */
export const ALL_SUITES: readonly SuiteName[] = ['cas-small', 'cas-large', 'ac', 'exec'];

export interface BaselineFigure {
  /** What the baseline is, e.g. "raw-grpc-client-stream". */
  name: string;
  /** For people: how it was measured. */
  label: string;
  value: number;
  unit: string;
}

export interface Metric {
  /** Unique within a result and stable across runs (what --compare matches on), e.g. "cas-large/bytestream-write/16MiB/c1". */
  id: string;
  /** What was measured, e.g. "bytestream-write"; the same for every size and concurrency. */
  name: string;
  /** For people: what was measured. */
  label: string;
  /** Calls (or streams, or actions) in flight at once. */
  concurrency: number;
  /** The blob size, where the metric has one. */
  sizeBytes?: number;
  /** Median over the repetitions. */
  value: number;
  unit: string;
  /** Whether a larger value is better (rates) or worse (latencies). */
  better: 'higher' | 'lower';
  /** The same-run reference figure this one is compared with (its median); null when it could not be measured here. */
  baseline: BaselineFigure | null;
  /** value / baseline.value, or null without a baseline. */
  ratio: number | null;
  /** Per-repetition figures, in run order. */
  samples: number[];
  baselineSamples: number[];
}

/** Something a suite could not measure because the endpoint does not offer it (not a failure). */
export interface Unsupported {
  /** What was skipped, e.g. "UpdateActionResult" or "exec". */
  what: string;
  /** Why, in the endpoint's words where it gave any. */
  reason: string;
}

export interface SuiteResult {
  name: SuiteName;
  /** ok: everything measured; partial: some parts unsupported; unsupported: nothing could be measured. */
  status: 'ok' | 'partial' | 'unsupported';
  unsupported: Unsupported[];
  params: Record<string, number | string | number[]>;
  metrics: Metric[];
  /** Measured quantities that show the work really happened (bytes read back, blobs found, exit codes...). */
  checks: Record<string, number | boolean | string>;
}

export interface HostInfo {
  cpus: number;
  cpuModel: string;
  node: string;
  platform: string;
  arch: string;
  totalMemBytes: number;
  /** 1, 5 and 15 minute load averages when the run started. */
  loadAvg: number[];
  /** The same when it ended. */
  loadAvgEnd?: number[];
}

export type BenchTarget =
  | { kind: 'temporary'; endpoint: string; instance: string; fsync: boolean; execution: boolean; dataDir: string; note: string }
  | { kind: 'local'; endpoint: string; instance: string; config: string; note: string }
  | { kind: 'endpoint'; endpoint: string; instance: string; tls: boolean; token: boolean; note: string };

/** One metric of this run next to the same metric of an earlier one. */
export interface ComparisonRow {
  id: string;
  label: string;
  unit: string;
  before: number;
  after: number;
  /** after / before − 1 (0.1 = 10 % larger). */
  change: number;
  ratioBefore: number | null;
  ratioAfter: number | null;
  /** ratioAfter / ratioBefore − 1: the change with the machine's speed factored out. */
  ratioChange: number | null;
  /** Whether the change is for the better, judging by the ratio when both have one. */
  verdict: 'better' | 'worse' | 'same';
}

export interface Comparison {
  file: string;
  startedAt: string;
  loadAvg: number[];
  rows: ComparisonRow[];
  /** Metric ids of the earlier run this one did not measure, and the reverse. */
  onlyBefore: string[];
  onlyAfter: string[];
}

export interface BenchResult {
  /** Version of this format. */
  format: 'reexec-bench/1';
  host: HostInfo;
  target: BenchTarget;
  startedAt: string;
  durationSeconds: number;
  repeat: number;
  /** The concurrency sweep. */
  concurrency: number[];
  /** How the baselines were obtained. */
  baselines: string;
  suites: SuiteResult[];
  comparison?: Comparison;
}

/** One cell of the multi-endpoint table: an endpoint's figure for a metric, or why there is none. */
export interface MultiCell {
  /** measured; unsupported: the endpoint does not offer what the metric needs; absent: the endpoint's run has no such metric. */
  status: 'measured' | 'unsupported' | 'absent';
  /** Median over the repetitions (null unless measured). */
  value: number | null;
  /** The figure over its own same-run baseline (as in a single-endpoint run), when it has one. */
  baselineRatio: number | null;
  /** value / the first endpoint's value for the same metric (null for the first endpoint, or when either is missing). */
  ratioToFirst: number | null;
}

/** A row of the multi-endpoint table: one metric, one cell per endpoint in the order given. */
export interface MultiRow {
  id: string;
  label: string;
  unit: string;
  better: 'higher' | 'lower';
  cells: MultiCell[];
}

/** The machine-readable result of `reexec bench` with several endpoints. */
export interface MultiBenchResult {
  format: 'reexec-bench-multi/1';
  host: HostInfo;
  startedAt: string;
  durationSeconds: number;
  repeat: number;
  concurrency: number[];
  baselines: string;
  /** The endpoints in column order, each with its full single-endpoint result (samples of every repetition merged). */
  endpoints: Array<{ label: string; result: BenchResult }>;
  /** What ran when: each repetition runs every suite on every endpoint in turn (A B A B ...), so drift hits all alike. */
  order: Array<{ repetition: number; suite: SuiteName; endpoint: string }>;
  rows: MultiRow[];
}
