import type { ConnectionStats } from '../daemon/connection-guard.js';
import type { DiskSpaceSnapshot } from '../store/disk-space.js';
import type { StoreSizes } from '../metrics/store-usage.js';
import type { Telemetry } from '../metrics/telemetry.js';
import { codeName } from '../metrics/rpc-metrics.js';
import type { Execution, Job, Operation } from '../scheduler/operation.js';
import { BOTS_POOL, UPSTREAM_POOL, type Scheduler } from '../scheduler/scheduler.js';
import type { BotInfo } from '../bots/bot-sessions.js';
import type { UpstreamStatus } from './status-snapshot.js';
import type { ActionSummary, BotStatus, CacheStatus, CompletedAction, ExecutionStatus, GcStatus, PoolStatus, RunningAction, StatusSnapshot } from './status-snapshot.js';

/** At most this many waiting actions are listed (the total is always given). */
export const QUEUE_LIMIT = 100;
/** At most this many finished operations are listed. */
export const RECENT_LIMIT = 50;
const ARGV_WORDS = 8;
const WORD_CHARS = 60;

/** The bots connected through the Remote Workers API. */
export interface BotSource {
  list(): BotInfo[];
  /** Bot id → the execution it runs. */
  running(): ReadonlyMap<string, Execution>;
}

/** The parts of the daemon a status snapshot reads. */
export interface StatusSources {
  version: string;
  startedAt: Date;
  listeners: string[];
  dataDir: string;
  metrics?: () => { url: string | null; error?: string };
  /** Absent when remote execution is disabled. */
  execution?: { scheduler: Scheduler; running: ReadonlyMap<string, Execution>; bots?: BotSource; upstream?: UpstreamSource };
  telemetry?: Telemetry;
  usage?: () => StoreSizes;
  /** The configured CAS budget, when there is one. */
  budgetBytes?: () => number | undefined;
  connections?: () => ConnectionStats;
  disk?: () => DiskSpaceSnapshot;
  /** The upstream part, when the daemon stands in front of one. */
  upstream?: () => UpstreamStatus;
  now?: () => number;
}

/** The first words of a command line, each cut to a readable length. */
export function shortArgv(args: readonly string[] | null | undefined): string[] {
  return (args ?? []).slice(0, ARGV_WORDS).map((w) => (w.length > WORD_CHARS ? `${w.slice(0, WORD_CHARS / 2 - 1)}…${w.slice(-(WORD_CHARS / 2))}` : w));
}

function summary(op: { name: string; job: Job; pool: string; client?: string }): ActionSummary {
  return { operation: op.name, argv: shortArgv(op.job.command.arguments), pool: op.pool, ...(op.client ? { client: op.client } : {}) };
}

/** An execution as the status view lists it: under the oldest operation waiting on it. */
function executionSummary(ex: Execution): ActionSummary {
  const first = ex.operations.values().next().value as Operation | undefined;
  return summary({ name: first?.name ?? `(execution ${ex.id}, no operation waits on it)`, job: ex.job, pool: ex.pool, client: first?.client });
}

const ratio = (hits: number, misses: number): number | null => (hits + misses > 0 ? hits / (hits + misses) : null);
const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0);
const zeros = (n: number): number[] => new Array<number>(n).fill(0);

function completed(op: Operation): CompletedAction {
  const r = op.response ?? {};
  const done = op.completedAt ?? op.queuedAt;
  return {
    ...summary(op),
    completedAt: done.toISOString(),
    durationMs: Math.max(0, done.getTime() - op.queuedAt.getTime()),
    exitCode: r.result ? (r.result.exitCode ?? 0) : null,
    status: codeName(r.status?.code ?? 0),
    cached: Boolean(r.cachedResult),
  };
}

function runningAction(ex: Execution, now: number): RunningAction {
  const started = ex.startedAt ?? ex.queuedAt;
  return {
    ...executionSummary(ex),
    stage: ex.stage,
    ...(ex.phase ? { phase: ex.phase } : {}),
    startedAt: started.toISOString(),
    elapsedMs: Math.max(0, now - started.getTime()),
    queuedMs: Math.max(0, started.getTime() - ex.queuedAt.getTime()),
  };
}

/** The bots as a pool whose slots are the bots (shown like local slots), and their details. */
function collectBots(bots: BotSource, depth: number, now: number): { pool: PoolStatus; bots: BotStatus[] } {
  const list = bots.list();
  const running = bots.running();
  const isas = [...new Set(list.flatMap((b) => b.properties.filter((p) => p.name === 'ISA').map((p) => p.value)))];
  return {
    pool: { name: BOTS_POOL, isas, queueDepth: depth, slots: list.map((b) => ({ slot: b.botId, action: running.has(b.botId) ? runningAction(running.get(b.botId)!, now) : null })) },
    bots: list.map((b) => {
      const ex = running.get(b.botId);
      const first = ex ? (ex.operations.values().next().value as Operation | undefined) : undefined;
      return {
        botId: b.botId,
        host: b.host,
        properties: b.properties.map((p) => `${p.name}=${p.value}`),
        status: b.status,
        lease: b.lease && ex ? { state: b.lease.state, operation: first?.name ?? `(execution ${ex.id})`, argv: shortArgv(ex.job.command.arguments) } : null,
        lastContact: b.lastContact.toISOString(),
        idleSeconds: Math.max(0, Math.round((now - b.lastContact.getTime()) / 1000)),
        leasesCompleted: b.leasesCompleted,
      };
    }),
  };
}

/** The upstream execution is forwarded to: its URL, what is in flight there, and why it cannot be used (if so). */
export interface UpstreamSource {
  readonly url: string;
  readonly running: ReadonlyMap<string, Execution>;
  unavailable?(): string | undefined;
}

/** The upstream as a pool whose slots are the actions in flight there. */
function upstreamPool(up: UpstreamSource, depth: number, now: number): PoolStatus {
  const why = up.unavailable?.();
  return {
    name: UPSTREAM_POOL,
    isas: [],
    upstream: up.url,
    ...(why ? { unavailable: why } : {}),
    queueDepth: depth,
    slots: [...up.running].map(([slot, ex]) => ({ slot, action: runningAction(ex, now) })),
  };
}

function collectExecution(scheduler: Scheduler, running: ReadonlyMap<string, Execution>, now: number, botSource?: BotSource, upstream?: UpstreamSource): ExecutionStatus {
  const depths = scheduler.queueDepths();
  const pools: PoolStatus[] = scheduler.pools.map((p) => {
    // WorkerPool names its slots POOL-0, POOL-1...; any other running slot of the pool is shown too.
    const names = p.unavailable ? [] : Array.from({ length: p.slots }, (_, i) => `${p.name}-${i}`);
    for (const [slot, ex] of running) if (ex.pool === p.name && !names.includes(slot)) names.push(slot);
    return {
      name: p.name,
      isas: [...p.isas],
      ...(p.unavailable ? { unavailable: p.unavailable } : {}),
      queueDepth: depths[p.name] ?? 0,
      slots: names.map((slot) => {
        const ex = running.get(slot);
        return { slot, action: ex ? runningAction(ex, now) : null };
      }),
    };
  });

  // One pass over the operations the scheduler keeps (an hour of them by default): a big
  // build leaves tens of thousands, so finished ones are never sorted whole.
  const newest: Operation[] = [];
  const window = 60;
  const executed = zeros(window);
  const cached = zeros(window);
  const nowSec = Math.floor(now / 1000);
  const doneAt = (op: Operation): number => op.completedAt?.getTime() ?? 0;
  for (const op of scheduler.list()) {
    if (op.stage !== 'COMPLETED') continue;
    const t = doneAt(op);
    const age = nowSec - Math.floor(t / 1000);
    if (age >= 0 && age < window) (op.response?.cachedResult ? cached : executed)[window - 1 - age]! += 1;
    if (newest.length === RECENT_LIMIT && t <= doneAt(newest[RECENT_LIMIT - 1]!)) continue;
    let i = newest.length;
    while (i > 0 && doneAt(newest[i - 1]!) < t) i--;
    newest.splice(i, 0, op);
    if (newest.length > RECENT_LIMIT) newest.pop();
  }
  const waiting = scheduler.queued().sort((a, b) => a.job.priority - b.job.priority || a.queuedAt.getTime() - b.queuedAt.getTime());

  const bots = botSource ? collectBots(botSource, depths[BOTS_POOL] ?? 0, now) : undefined;
  // The bots' pool is shown once a bot is connected, or when work waits for one.
  if (bots && (bots.bots.length > 0 || bots.pool.queueDepth > 0 || pools.length === 0)) pools.push(bots.pool);
  if (upstream) pools.push(upstreamPool(upstream, depths[UPSTREAM_POOL] ?? 0, now));
  return {
    pools,
    queued: waiting.slice(0, QUEUE_LIMIT).map((ex) => ({
      ...executionSummary(ex),
      queuedAt: ex.queuedAt.toISOString(),
      waitingMs: Math.max(0, now - ex.queuedAt.getTime()),
      priority: ex.job.priority,
      ...(ex.pool === BOTS_POOL ? { platform: ex.job.platform.raw.map((p) => `${p.name}=${p.value}`) } : {}),
    })),
    queuedTotal: waiting.length,
    runningTotal: running.size + (bots ? bots.bots.filter((b) => b.lease).length : 0) + (upstream?.running.size ?? 0),
    ...(bots ? { bots: bots.bots } : {}),
    recent: newest.map(completed),
    throughput: { windowSeconds: window, executed, cached },
  };
}

function collectCache(src: StatusSources): CacheStatus {
  const usage = src.usage?.();
  const disk = src.disk?.();
  const lookups = src.telemetry?.store.acLookups() ?? { hits: 0, misses: 0, perSecond: { hits: zeros(60), misses: zeros(60) } };
  const minuteHits = sum(lookups.perSecond.hits);
  const minuteMisses = sum(lookups.perSecond.misses);
  return {
    ac: {
      entries: usage?.acEntries ?? 0,
      hits: lookups.hits,
      misses: lookups.misses,
      hitRate: ratio(lookups.hits, lookups.misses),
      lastMinute: { hits: minuteHits, misses: minuteMisses, hitRate: ratio(minuteHits, minuteMisses) },
      perSecond: lookups.perSecond,
    },
    cas: {
      blobs: usage?.casBlobs ?? 0,
      bytes: usage?.casBytes ?? 0,
      bytesMeasuredAt: usage?.bytesMeasuredAt ? new Date(usage.bytesMeasuredAt).toISOString() : null,
      budgetBytes: src.budgetBytes?.() ?? null,
      disk: usage?.disk ?? null,
      ...(disk ? { reserve: { bytes: disk.reserveBytes, present: disk.reservePresent, critical: disk.critical } } : {}),
    },
  };
}

export function collectStatus(src: StatusSources): StatusSnapshot {
  const now = (src.now ?? Date.now)();
  const rpc = src.telemetry?.rpc.recent() ?? {
    windowSeconds: 60,
    calls: 0,
    misses: 0,
    errors: 0,
    bytesIn: 0,
    bytesOut: 0,
    perSecond: { calls: zeros(60), bytesIn: zeros(60), bytesOut: zeros(60) },
    methods: [],
  };
  const lastGc = src.telemetry?.gc.lastRun();
  const gc: GcStatus | null = lastGc ? { ...lastGc } : null;
  return {
    version: src.version,
    startedAt: src.startedAt.toISOString(),
    uptimeSeconds: Math.max(0, Math.round((now - src.startedAt.getTime()) / 1000)),
    takenAt: new Date(now).toISOString(),
    listeners: src.listeners,
    metrics: src.metrics?.() ?? { url: null },
    dataDir: src.dataDir,
    execution: src.execution ? collectExecution(src.execution.scheduler, src.execution.running, now, src.execution.bots, src.execution.upstream) : null,
    cache: collectCache(src),
    rpc,
    gc,
    ...(src.connections ? { connections: src.connections() } : {}),
    ...(src.upstream ? { upstream: src.upstream() } : {}),
  };
}
