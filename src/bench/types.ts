/** The machine-readable result of `reexec bench` (what `--json` prints). */

export interface BaselineFigure {
  /** What the baseline is, e.g. "raw-grpc-client-stream". */
  name: string;
  value: number;
  unit: string;
}

export interface Metric {
  /** Stable identifier, e.g. "bytestream-write". */
  name: string;
  /** For people: what was measured. */
  label: string;
  /** Median over the repetitions. */
  value: number;
  unit: string;
  /** The same-run reference figure this one is compared with (its median). */
  baseline: BaselineFigure & { label: string };
  /** value / baseline.value. */
  ratio: number;
  /** Per-repetition figures, in run order. */
  samples: number[];
  baselineSamples: number[];
}

export interface SuiteResult {
  name: SuiteName;
  params: Record<string, number | string>;
  metrics: Metric[];
  /** Measured quantities that show the work really happened (bytes read back, blobs found...). */
  checks: Record<string, number | boolean>;
}

export interface HostInfo {
  cpus: number;
  cpuModel: string;
  node: string;
  platform: string;
  arch: string;
  totalMemBytes: number;
  loadAvg: number[];
}

export type BenchTarget =
  | { kind: 'in-process'; endpoint: string; instance: string; fsync: boolean; dataDir: string; note: string }
  | { kind: 'endpoint'; endpoint: string; instance: string; note: string };

export interface BenchResult {
  host: HostInfo;
  target: BenchTarget;
  startedAt: string;
  durationSeconds: number;
  repeat: number;
  /** How the baselines were obtained. */
  baselines: string;
  suites: SuiteResult[];
}

export const SUITE_NAMES = ['cas-large', 'cas-small'] as const;
export type SuiteName = (typeof SUITE_NAMES)[number];
