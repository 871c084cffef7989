import { mergeMetricRuns } from './metric.js';
import { BenchProgress } from './progress.js';
import { RawGrpcBaseline } from './raw-grpc.js';
import { BASELINES_NOTE, hostInfo, loadAvgNow, openTarget, runSuite, stepsOf, type BenchOptions, type OpenTarget, type TargetSpec } from './run-bench.js';
import type { BenchResult, Metric, MultiBenchResult, MultiCell, MultiRow, SuiteName, SuiteResult, Unsupported } from './types.js';

/** A labelled target of a multi-endpoint run (the label heads its column). */
export interface LabelledTarget {
  label: string;
  spec: TargetSpec;
}

/** Several repetitions (each one run of a suite) of one suite on one endpoint as one result. */
export function mergeSuiteRuns(runs: readonly SuiteResult[]): SuiteResult {
  const first = runs[0]!;
  const unsupported: Unsupported[] = [];
  for (const r of runs) for (const u of r.unsupported) if (!unsupported.some((x) => x.what === u.what)) unsupported.push(u);
  const byId = new Map<string, Metric[]>();
  for (const r of runs) for (const m of r.metrics) byId.set(m.id, [...(byId.get(m.id) ?? []), m]);
  const checks: SuiteResult['checks'] = {};
  for (const r of runs) {
    for (const [k, v] of Object.entries(r.checks)) {
      const had = checks[k];
      if (had === undefined) checks[k] = v;
      else if (typeof v === 'number' && typeof had === 'number') checks[k] = had + v;
      else if (typeof v === 'boolean' && typeof had === 'boolean') checks[k] = had && v;
    }
  }
  const status = runs.every((r) => r.status === 'unsupported') ? 'unsupported' : unsupported.length ? 'partial' : 'ok';
  return { name: first.name, status, unsupported, params: first.params, metrics: [...byId.values()].map(mergeMetricRuns), checks };
}

/** The table: a row per metric any endpoint measured (in first-seen order), a cell per endpoint. */
export function multiRows(endpoints: ReadonlyArray<{ label: string; result: BenchResult }>): MultiRow[] {
  const rows = new Map<string, MultiRow>();
  const metricsOf = endpoints.map((e) => new Map(e.result.suites.flatMap((s) => s.metrics.map((m) => [m.id, m] as const))));
  for (const e of endpoints) {
    for (const s of e.result.suites) {
      for (const m of s.metrics) if (!rows.has(m.id)) rows.set(m.id, { id: m.id, label: m.label, unit: m.unit, better: m.better, cells: [] });
    }
  }
  for (const row of rows.values()) {
    const suite = row.id.split('/')[0];
    const firstValue = metricsOf[0]!.get(row.id)?.value;
    row.cells = endpoints.map((e, i): MultiCell => {
      const m = metricsOf[i]!.get(row.id);
      if (!m) {
        const s = e.result.suites.find((x) => x.name === suite);
        return { status: s && s.status !== 'ok' ? 'unsupported' : 'absent', value: null, baselineRatio: null, ratioToFirst: null };
      }
      return { status: 'measured', value: m.value, baselineRatio: m.ratio, ratioToFirst: i > 0 && firstValue !== undefined && firstValue !== 0 ? m.value / firstValue : null };
    });
  }
  return [...rows.values()];
}

/**
 * Every suite against every target, interleaved: repetition r runs suite 1 on target A, then
 * on B, ..., then suite 2 on A, B, ..., so that whatever the machine does meanwhile (load of
 * other work, thermal drift) falls on all targets alike. Each run is one repetition with its
 * own same-run baselines; the repetitions of a target merge into one result per target, and
 * the table sets the targets side by side with each one's ratio to the first.
 */
export async function runMultiBench(opts: BenchOptions & { targets: LabelledTarget[] }): Promise<MultiBenchResult> {
  if (opts.targets.length === 0) throw new Error('runMultiBench needs at least one target');
  const progress = opts.progress ?? new BenchProgress(undefined);
  const startedAt = new Date();
  const t0 = process.hrtime.bigint();
  const host = hostInfo();
  const cleanups: (() => Promise<void> | void)[] = [];
  try {
    const open: OpenTarget[] = [];
    for (const t of opts.targets) open.push(await openTarget(t.spec, opts, progress, cleanups));
    const raw = await RawGrpcBaseline.start();
    cleanups.push(() => raw.close());
    const runs = opts.targets.map(() => new Map<SuiteName, SuiteResult[]>());
    const order: MultiBenchResult['order'] = [];
    progress.info(
      `running ${opts.suites.join(', ')} against ${opts.targets.map((t, i) => `${t.label} (${open[i]!.target.endpoint})`).join(', ')}, interleaved, ` +
        `${opts.repeat} repetition${opts.repeat === 1 ? '' : 's'}, concurrency ${opts.concurrency.join(', ')}`,
    );
    for (let rep = 1; rep <= opts.repeat; rep++) {
      for (const name of opts.suites) {
        for (let i = 0; i < opts.targets.length; i++) {
          const label = opts.targets[i]!.label;
          order.push({ repetition: rep, suite: name, endpoint: label });
          const p = progress.suite(`${name} @ ${label} (repetition ${rep}/${opts.repeat})`, stepsOf(name, { ...opts, repeat: 1 }));
          const r = await runSuite(name, open[i]!, raw, opts, p, 1);
          runs[i]!.set(name, [...(runs[i]!.get(name) ?? []), r]);
        }
      }
    }
    progress.done();
    const durationSeconds = Number(process.hrtime.bigint() - t0) / 1e9;
    const hostEnd = { ...host, loadAvgEnd: loadAvgNow() };
    const endpoints = opts.targets.map((t, i) => ({
      label: t.label,
      result: {
        format: 'reexec-bench/1' as const,
        host: hostEnd,
        target: open[i]!.target,
        startedAt: startedAt.toISOString(),
        durationSeconds,
        repeat: opts.repeat,
        concurrency: opts.concurrency,
        baselines: BASELINES_NOTE,
        suites: opts.suites.map((s) => mergeSuiteRuns(runs[i]!.get(s)!)),
      },
    }));
    return {
      format: 'reexec-bench-multi/1',
      host: hostEnd,
      startedAt: startedAt.toISOString(),
      durationSeconds,
      repeat: opts.repeat,
      concurrency: opts.concurrency,
      baselines: BASELINES_NOTE,
      endpoints,
      order,
      rows: multiRows(endpoints),
    };
  } finally {
    progress.done();
    for (const c of cleanups.reverse()) await Promise.resolve(c()).catch(() => undefined);
  }
}
