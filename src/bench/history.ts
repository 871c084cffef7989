import { randomUUID } from 'node:crypto';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { connect } from '../client/reapi-client.js';
import { scratchDaemonConfig, type Config } from '../config/config.js';
import { Daemon } from '../daemon/daemon.js';
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
  /** Rounds (each a sample of the figures). */
  rounds: number;
  /** Pairs of no-op actions (one on each daemon) per concurrency and round. */
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

/**
 * The median of the paired latency ratios (history on / off) and its 95 % confidence interval,
 * distribution-free (order statistics of a binomial(n, ½)): "1.004× (95 % CI 0.991–1.017, 960 pairs)".
 */
export function pairedRatio(ratios: readonly number[]): string {
  const r = [...ratios].filter(Number.isFinite).sort((a, b) => a - b);
  const n = r.length;
  if (n === 0) return 'no pairs';
  const k = Math.max(0, Math.floor(n / 2 - 0.98 * Math.sqrt(n)));
  const lo = r[k]!;
  const hi = r[Math.min(n - 1, n - 1 - k)]!;
  return `${median(r).toFixed(3)}× (95 % CI ${lo.toFixed(3)}–${hi.toFixed(3)}, ${n} pairs)`;
}

/**
 * The cost of the action history on the smallest action: the no-op action's latency and rate
 * on a daemon recording every Execute against an identical daemon with history.enabled false,
 * both in this process. Interleaved action by action (pair i runs on both, back to back, the
 * order alternating), so that a loaded machine's drift falls on both alike; the median of the
 * pairs' latency ratios comes with its 95 % confidence interval, the noise of the claim.
 */
export async function runHistoryBench(o: HistoryBenchOptions): Promise<SuiteResult> {
  const unsupported = (reason: string): SuiteResult => ({ name: 'history', status: 'unsupported', unsupported: [{ what: 'history', reason }], params: {}, metrics: [], checks: {} });
  const program = noopProgram();
  if (!program) return unsupported(`no no-op program for ${process.arch}: the bench makes one for x64 and arm64, else it needs a static busybox`);
  const sides: Side[] = [];
  try {
    for (const name of ['on', 'off'] as const) {
      const dir = mkdtempSync(join(o.tmpRoot, `reexec-bench-history-${name}-`));
      // As root the daemon runs actions as an unprivileged user, which must pass through to the data dir.
      chmodSync(dir, 0o711);
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
    const [on, off] = sides as [Side, Side];
    const upload = (s: Side, salts: string[]) => uploadActions({ clients: s.clients, instance: '', maxBatchBytes: 4 * 1024 * 1024 }, s.root, spec, salts);
    for (const c of o.concurrency) {
      const lat = { on: [] as number[], off: [] as number[] };
      const rate = { on: [] as number[], off: [] as number[] };
      const ratios: number[] = [];
      for (let round = 1; round <= o.rounds; round++) {
        const n = Math.max(o.actions, c);
        const salts = (s: Side) => Array.from({ length: n }, (_, i) => `${runId}/${s.name}/c${c}/r${round}/${i}`);
        const actions = { on: await upload(on, salts(on)), off: await upload(off, salts(off)) };
        const ms = { on: new Array<number>(n).fill(0), off: new Array<number>(n).fill(0) };
        let ok = 0;
        // Pair i runs action i on both daemons back to back, the order alternating: what the
        // machine's load does to one, it does to the other.
        await runConcurrent(n, c, async (i) => {
          for (const s of i % 2 === 0 ? [on, off] : [off, on]) {
            const t0 = process.hrtime.bigint();
            const r = await execute(s.clients, '', actions[s.name][i]!);
            ms[s.name][i] = Number(process.hrtime.bigint() - t0) / 1e6;
            if (succeeded(r)) ok++;
          }
        });
        for (let i = 0; i < n; i++) ratios.push(ms.on[i]! / ms.off[i]!);
        for (const k of ['on', 'off'] as const) {
          lat[k].push(median(ms[k]));
          // Little's law: c actions in flight, half of them on each daemon.
          rate[k].push((c === 1 ? 1 : c / 2) / (ms[k].reduce((a, b) => a + b, 0) / n / 1000));
        }
        checks['noopActions'] = Number(checks['noopActions']) + 2 * n;
        checks['noopSucceeded'] = Number(checks['noopSucceeded']) + ok;
        o.progress.step(`round ${round}/${o.rounds}, ${n} pairs of no-op actions at concurrency ${c}: p50 history on ${formatNumber(lat.on.at(-1)!)} ms, off ${formatNumber(lat.off.at(-1)!)} ms`);
      }
      const base = { name: 'history-off', label: 'the same no-op actions on an identical daemon with history.enabled false, each paired with one on the history-on daemon, back to back' };
      metrics.push(
        makeMetric({ suite: 'history', name: 'noop', label: 'no-op action, Execute to result, history on', unit: 'actions/s', better: 'higher', concurrency: c, samples: rate.on, baseline: { ...base, samples: rate.off } }),
        makeMetric({ suite: 'history', name: 'noop-latency', label: 'no-op action latency p50, history on', unit: 'ms', better: 'lower', concurrency: c, samples: lat.on, baseline: { ...base, samples: lat.off } }),
      );
      checks[`pairedLatencyRatioC${c}`] = pairedRatio(ratios);
    }
    // The history really recorded every Execute of its daemon, and the other recorded none.
    const recorded = on.daemon.history!;
    await recorded.recorder.flush();
    checks['historyEntries'] = recorded.store.size;
    checks['historyOffDaemonRecords'] = off.daemon.history === undefined ? 'nothing (history off)' : 'entries';
    return { name: 'history', status: 'ok', unsupported: [], params: { concurrency: o.concurrency, rounds: o.rounds, actions: o.actions }, metrics, checks };
  } finally {
    for (const s of sides) {
      s.clients.close();
      await s.daemon.stop(5_000).catch(() => undefined);
      rmSync(s.dir, { recursive: true, force: true });
    }
  }
}
