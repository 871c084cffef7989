import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { connect } from '../client/reapi-client.js';
import { scratchDaemonConfig, type Config } from '../config/config.js';
import { Daemon } from '../daemon/daemon.js';
import type { re } from '../proto.js';
import type { Logger } from '../util/logger.js';
import { encodeTree, execute, noopProgram, succeeded, uploadActions, uploadBlobs } from './exec.js';
import { makeMetric } from './metric.js';
import { CLIENT_CHANNEL_OPTIONS } from './raw-grpc.js';
import { formatNumber, median, runConcurrent } from './stats.js';
import type { SuiteProgress } from './support.js';
import type { Metric, SuiteResult } from './types.js';

export interface HistoryBenchOptions {
  /** Settings of both daemons (storage, execution); history on in one, off in the other. */
  config?: Config;
  /** Where their data dirs go (removed afterwards). */
  tmpRoot: string;
  concurrency: number[];
  /** Rounds: each runs the no-op batch on both daemons, in alternating order. */
  rounds: number;
  /** No-op actions per daemon, concurrency and round. */
  actions: number;
  progress: SuiteProgress;
  log: Logger;
}

export const historySteps = (o: Pick<HistoryBenchOptions, 'concurrency' | 'rounds'>): number => o.concurrency.length * o.rounds;

interface Side {
  name: 'on' | 'off';
  daemon: Daemon;
  clients: ReturnType<typeof connect>;
  root: ReturnType<typeof encodeTree>['root'];
  dir: string;
}

/** "0.98× (0.93–1.04)": the median of the per-round ratios and their range. */
const spread = (ratios: number[]): string => `${median(ratios).toFixed(3)}× (${Math.min(...ratios).toFixed(3)}–${Math.max(...ratios).toFixed(3)})`;

/**
 * The cost of the action history on the smallest action: the no-op action's rate and latency
 * on a daemon recording every Execute against an identical daemon with history.enabled false,
 * both in this process, in interleaved rounds (the order alternates, so that drift of a loaded
 * machine falls on both alike). Each round gives one paired ratio; their range is the noise.
 */
export async function runHistoryBench(o: HistoryBenchOptions): Promise<SuiteResult> {
  const unsupported = (reason: string): SuiteResult => ({ name: 'history', status: 'unsupported', unsupported: [{ what: 'history', reason }], params: {}, metrics: [], checks: {} });
  const program = noopProgram();
  if (!program) return unsupported(`no no-op program for ${process.arch}: the bench makes one for x64 and arm64, else it needs a static busybox`);
  const sides: Side[] = [];
  try {
    for (const name of ['on', 'off'] as const) {
      const dir = mkdtempSync(join(o.tmpRoot, `reexec-bench-history-${name}-`));
      const config = scratchDaemonConfig(dir, o.config);
      config.execution.enabled = true;
      config.history.enabled = name === 'on';
      const daemon = await Daemon.start(config, o.log);
      const clients = connect(daemon.addresses[0]!, CLIENT_CHANNEL_OPTIONS);
      const tree = encodeTree({ files: [], dirs: [{ name: 'bin', dir: { files: [{ name: 'true', data: program.data, executable: true }], dirs: [] } }] });
      sides.push({ name, daemon, clients, root: tree.root, dir });
      await uploadBlobs(clients, '', tree.blobs.values(), 4 * 1024 * 1024);
    }
    const runId = randomUUID();
    const spec = { args: ['/bin/true'] };
    // Warm up each daemon (worker slots, staging cache, first history write).
    for (const s of sides) {
      const [warm] = await uploadActions({ clients: s.clients, instance: '', maxBatchBytes: 4 * 1024 * 1024 }, s.root, spec, [`${runId}/warm/${s.name}`]);
      const r = await execute(s.clients, '', warm!);
      if (!succeeded(r)) return unsupported(`the no-op action does not succeed on the ${s.name === 'on' ? 'history-on' : 'history-off'} daemon`);
    }
    const metrics: Metric[] = [];
    const checks: SuiteResult['checks'] = { noopActions: 0, noopSucceeded: 0, noopProgram: program.what };
    const samples = new Map<number, { rate: Record<Side['name'], number[]>; lat: Record<Side['name'], number[]>; ratio: number[] }>();
    for (const c of o.concurrency) samples.set(c, { rate: { on: [], off: [] }, lat: { on: [], off: [] }, ratio: [] });
    for (let round = 1; round <= o.rounds; round++) {
      const order = round % 2 === 1 ? sides : [...sides].reverse();
      for (const c of o.concurrency) {
        const cell = samples.get(c)!;
        const n = Math.max(o.actions, c);
        const rates: Partial<Record<Side['name'], number>> = {};
        for (const s of order) {
          const actions = await uploadActions({ clients: s.clients, instance: '', maxBatchBytes: 4 * 1024 * 1024 }, s.root, spec, Array.from({ length: n }, (_, i) => `${runId}/${s.name}/c${c}/r${round}/${i}`));
          const responses: re.ExecuteResponse[] = new Array(n);
          const t = await runConcurrent(n, c, async (i) => void (responses[i] = await execute(s.clients, '', actions[i]!)));
          rates[s.name] = n / t.seconds;
          cell.rate[s.name].push(n / t.seconds);
          cell.lat[s.name].push(median(t.latenciesMs));
          checks['noopActions'] = Number(checks['noopActions']) + n;
          checks['noopSucceeded'] = Number(checks['noopSucceeded']) + responses.filter(succeeded).length;
        }
        cell.ratio.push(rates.on! / rates.off!);
        o.progress.step(`round ${round}/${o.rounds}, ${n} no-op actions at concurrency ${c} on each: history on ${formatNumber(rates.on!)}/s, off ${formatNumber(rates.off!)}/s (${(rates.on! / rates.off!).toFixed(3)}×)`);
      }
    }
    for (const c of o.concurrency) {
      const cell = samples.get(c)!;
      const base = { name: 'history-off', label: 'the same no-op actions on an identical daemon with history.enabled false, in the same rounds' };
      metrics.push(
        makeMetric({ suite: 'history', name: 'noop', label: 'no-op action, Execute to result, history on', unit: 'actions/s', better: 'higher', concurrency: c, samples: cell.rate.on, baseline: { ...base, samples: cell.rate.off } }),
        makeMetric({ suite: 'history', name: 'noop-latency', label: 'no-op action latency p50, history on', unit: 'ms', better: 'lower', concurrency: c, samples: cell.lat.on, baseline: { ...base, samples: cell.lat.off } }),
      );
      checks[`pairedRatioC${c}`] = spread(cell.ratio);
    }
    // The history really recorded every Execute of its daemon, and the other recorded none.
    const on = sides.find((s) => s.name === 'on')!.daemon.history!;
    await on.recorder.flush();
    checks['historyEntries'] = on.store.size;
    checks['historyOffDaemonRecords'] = sides.find((s) => s.name === 'off')!.daemon.history === undefined ? 'nothing (history off)' : 'entries';
    return { name: 'history', status: 'ok', unsupported: [], params: { concurrency: o.concurrency, rounds: o.rounds, actions: o.actions }, metrics, checks };
  } finally {
    for (const s of sides) {
      s.clients.close();
      await s.daemon.stop(5_000).catch(() => undefined);
      rmSync(s.dir, { recursive: true, force: true });
    }
  }
}
