import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { re } from '../proto.js';
import type { Execution } from '../scheduler/operation.js';
import { UPSTREAM_POOL, type Scheduler } from '../scheduler/scheduler.js';
import type { BotInfo } from '../bots/bot-sessions.js';
import { codeName } from './rpc-metrics.js';
import { protoTimeToMs, type ProtoTime } from '../util/proto-time.js';

/** Seconds: from a few milliseconds (a cached input tree) to hours (a whole BuildStream element). */
const ACTION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400];

type Timestamp = ProtoTime | null | undefined;
const seconds = (t: Timestamp): number | undefined => {
  const ms = t && t.seconds !== undefined ? protoTimeToMs(t) : undefined;
  return ms === undefined ? undefined : ms / 1000;
};
const between = (a: Timestamp, b: Timestamp): number | undefined => {
  const x = seconds(a);
  const y = seconds(b);
  return x !== undefined && y !== undefined && y >= x ? y - x : undefined;
};

/** How an executed action ended: "success", "exit_nonzero", or the status code's name. */
export function outcomeOf(response: re.IExecuteResponse | undefined): string {
  const code = response?.status?.code ?? 0;
  if (code !== 0) return codeName(code).toLowerCase();
  return (response?.result?.exitCode ?? 0) === 0 ? 'success' : 'exit_nonzero';
}

/** The running executions, by slot: what the worker slots hold. */
export interface RunningSource {
  readonly running: ReadonlyMap<string, Execution>;
}

/** The bots connected through the Remote Workers API. */
export interface BotsSource {
  list(): BotInfo[];
}

/** One series per connected bot: its properties, whether it holds a lease, its last contact; and lost leases. */
function botMetrics(registers: Registry[], scheduler: Scheduler, bots: BotsSource): void {
  new Gauge({
    name: 'reexec_bot_info',
    help: 'Bots connected through the Remote Workers API (1 each), with their host and the properties they offer.',
    labelNames: ['bot', 'host', 'properties'],
    registers,
    collect() {
      this.reset();
      for (const b of bots.list()) this.set({ bot: b.botId, host: b.host, properties: b.properties.map((p) => `${p.name}=${p.value}`).join(',') }, 1);
    },
  });
  new Gauge({
    name: 'reexec_bot_busy',
    help: 'Whether a bot holds a lease (1) or waits for work (0).',
    labelNames: ['bot'],
    registers,
    collect() {
      this.reset();
      for (const b of bots.list()) this.set({ bot: b.botId }, b.lease ? 1 : 0);
    },
  });
  new Gauge({
    name: 'reexec_bot_last_contact_seconds',
    help: 'Seconds since a bot last called UpdateBotSession.',
    labelNames: ['bot'],
    registers,
    collect() {
      this.reset();
      const now = scheduler.clock.now();
      for (const b of bots.list()) this.set({ bot: b.botId }, Math.max(0, (now - b.lastContact.getTime()) / 1000));
    },
  });
  new Gauge({
    name: 'reexec_bot_leases_completed',
    help: 'Leases a bot completed in its current session.',
    labelNames: ['bot'],
    registers,
    collect() {
      this.reset();
      for (const b of bots.list()) this.set({ bot: b.botId }, b.leasesCompleted);
    },
  });
  const lost = new Counter({ name: 'reexec_leases_requeued_total', help: 'Leases lost (a worker went away, stopped reporting, or a bot restarted) whose action was queued again.', registers });
  scheduler.on('requeued', () => lost.inc());
}

/**
 * Execution metrics, fed by the scheduler's change events and read from its queues: executed
 * actions by outcome, time queued, staging inputs, running and uploading outputs (from the
 * ExecutedActionMetadata the worker fills in), queue depth and running actions per pool.
 */
export class ExecutionMetrics {
  constructor(registry: Registry, scheduler: Scheduler, workers: RunningSource, bots?: BotsSource) {
    const registers = [registry];
    if (bots) botMetrics(registers, scheduler, bots);
    const executed = new Counter({ name: 'reexec_actions_executed_total', help: 'Actions run by a worker, by pool and outcome (success, exit_nonzero, or the status code).', labelNames: ['pool', 'outcome'], registers });
    const histogram = (name: string, help: string): Histogram<'pool'> => new Histogram({ name, help, labelNames: ['pool'], buckets: ACTION_BUCKETS, registers });
    const queued = histogram('reexec_action_queued_seconds', 'Time actions waited in the queue before a worker took them.');
    const staging = histogram('reexec_action_staging_seconds', 'Time spent fetching and staging input trees.');
    const execution = histogram('reexec_action_execution_seconds', 'Time the action process ran.');
    const upload = histogram('reexec_action_output_upload_seconds', 'Time spent collecting and storing outputs.');
    // The pools actions can run in: local ones, and the upstream when actions are forwarded there.
    const poolNames = [...scheduler.pools.map((p) => p.name), ...(scheduler.forward !== 'local' ? [UPSTREAM_POOL] : [])];
    for (const pool of poolNames) executed.inc({ pool, outcome: 'success' }, 0);

    new Gauge({
      name: 'reexec_queue_depth',
      help: 'Actions waiting for a worker, per pool.',
      labelNames: ['pool'],
      registers,
      collect() {
        for (const [pool, depth] of Object.entries(scheduler.queueDepths())) this.set({ pool }, depth);
      },
    });
    new Gauge({
      name: 'reexec_running_actions',
      help: 'Actions running, per pool.',
      labelNames: ['pool'],
      registers,
      collect() {
        const counts = new Map(poolNames.map((p) => [p, 0]));
        for (const ex of workers.running.values()) counts.set(ex.pool, (counts.get(ex.pool) ?? 0) + 1);
        for (const [pool, n] of counts) this.set({ pool }, n);
      },
    });
    new Gauge({
      name: 'reexec_worker_slots',
      help: 'Worker slots per pool (0 when the pool is unavailable).',
      labelNames: ['pool'],
      registers,
      collect() {
        for (const p of scheduler.pools) this.set({ pool: p.name }, p.unavailable ? 0 : p.slots);
      },
    });

    // Once per run, however many operations waited on it.
    scheduler.on('execution', (ex: Execution) => {
      if (ex.stage !== 'COMPLETED') return;
      const pool = { pool: ex.pool };
      executed.inc({ ...pool, outcome: outcomeOf(ex.response) });
      const meta = ex.response?.result?.executionMetadata;
      if (!meta) return;
      const observe = (h: Histogram<'pool'>, s: number | undefined): void => {
        if (s !== undefined) h.observe(pool, s);
      };
      observe(queued, between(meta.queuedTimestamp, meta.workerStartTimestamp));
      observe(staging, between(meta.inputFetchStartTimestamp, meta.inputFetchCompletedTimestamp));
      observe(execution, between(meta.executionStartTimestamp, meta.executionCompletedTimestamp));
      observe(upload, between(meta.outputUploadStartTimestamp, meta.outputUploadCompletedTimestamp));
    });
  }
}
