import type { ConnectionStats } from '../daemon/connection-guard.js';
import type { GcRunRecord } from '../gc/gc-run.js';
import type { ExecutionPhase } from '../scheduler/operation.js';

/**
 * What `reexec status` shows: one snapshot of the daemon, produced by the daemon
 * (collectStatus) and rendered by the CLI. Shared as JSON over the Admin API, so this file is
 * the contract of `reexec status --json`: add fields, never rename or remove them.
 * Times are ISO 8601 strings; durations are milliseconds; sizes are bytes.
 */
export interface StatusSnapshot {
  version: string;
  startedAt: string;
  uptimeSeconds: number;
  /** When the daemon took this snapshot. */
  takenAt: string;
  /** gRPC addresses the daemon serves on. */
  listeners: string[];
  /** Where Prometheus metrics are served, or why they are not. */
  metrics: { url: string | null; error?: string };
  dataDir: string;
  /** null when remote execution is disabled in the config. */
  execution: ExecutionStatus | null;
  cache: CacheStatus;
  rpc: RpcStatus;
  /** The last garbage collection, if one ran since the daemon started. */
  gc: GcStatus | null;
  /** Client connections: open, limits, refused and closed (absent from daemons before they were counted). */
  connections?: ConnectionStats;
  /** The upstream cluster this daemon stands in front of (absent without one). */
  upstream?: UpstreamStatus;
}

/** Lookups of one store in front of the upstream, since the daemon started. */
export interface UpstreamLookups {
  local: number;
  upstream: number;
  miss: number;
  /** Local misses not asked of the upstream because it was down. */
  upstreamDown: number;
  /** Action cache only: upstream entries refused because the upstream lacks some of their blobs. */
  incomplete: number;
}

export interface UpstreamStatus {
  url: string;
  instance: string;
  state: 'starting' | 'up' | 'down' | 'refused';
  since: string;
  /** The last failure and when ("" when none). */
  lastError: string;
  lastErrorAt: string;
  execEnabled: boolean;
  cas: UpstreamLookups;
  ac: UpstreamLookups;
  assets: UpstreamLookups;
  bytesDown: number;
  bytesUp: number;
  blobsDown: number;
  blobsUp: number;
  fetchErrors: number;
  /** The write-behind queue (absent when upstream.push is false). */
  queue?: {
    blobs: number;
    actionResults: number;
    assets: number;
    blobBytes: number;
    done: number;
    dropped: number;
    failed: number;
    /** Queueing time of the oldest pending item ("" when none). */
    oldestAt: string;
    lastError: string;
  };
}

export type { ConnectionStats };

export interface ExecutionStatus {
  pools: PoolStatus[];
  /** Waiting actions in the order they will run, across pools (at most QUEUE_LIMIT). */
  queued: QueuedAction[];
  /** Total waiting (queued may be cut short). */
  queuedTotal: number;
  runningTotal: number;
  /** Finished operations, newest first (at most RECENT_LIMIT), executed and cached. */
  recent: CompletedAction[];
  /** Completions per second over the last minute, oldest first. */
  throughput: { windowSeconds: number; executed: number[]; cached: number[] };
  /** Bots connected through the Remote Workers API (their slots are also the "bots" pool's). */
  bots?: BotStatus[];
}

export interface BotStatus {
  botId: string;
  /** The bot's address, as gRPC names the peer. */
  host: string;
  /** What it offers ("ISA=x86-64"). */
  properties: string[];
  /** BotStatus of the Remote Workers API (OK, UNHEALTHY, ...). */
  status: string;
  /** The lease it holds: its state and the operation. */
  lease: { state: string; operation: string; argv: string[] } | null;
  lastContact: string;
  /** Seconds since its last UpdateBotSession. */
  idleSeconds: number;
  leasesCompleted: number;
}

export interface PoolStatus {
  name: string;
  /** ISAs the pool's workers provide (canonical names). */
  isas: string[];
  /** Why the pool cannot run anything, when it cannot. */
  unavailable?: string;
  queueDepth: number;
  slots: SlotStatus[];
  /** The upstream's URL, for the pool of actions forwarded there (its slots: the actions in flight). */
  upstream?: string;
}

export interface SlotStatus {
  slot: string;
  /** null: idle. */
  action: RunningAction | null;
}

export interface ActionSummary {
  /** The operation name ("operations/UUID"). */
  operation: string;
  /** The first words of the command line (each shortened). */
  argv: string[];
  pool: string;
  /** The client's address, as gRPC names the peer. */
  client?: string;
}

export interface RunningAction extends ActionSummary {
  /** REAPI stage of the operation. */
  stage: 'QUEUED' | 'EXECUTING' | 'COMPLETED';
  /** Within EXECUTING: staging inputs, running the command, or uploading outputs (forwarded: see ExecutionPhase). */
  phase?: ExecutionPhase;
  startedAt: string;
  elapsedMs: number;
  /** How long it waited in the queue. */
  queuedMs: number;
}

export interface QueuedAction extends ActionSummary {
  queuedAt: string;
  waitingMs: number;
  priority: number;
  /** For actions only bots can run: the properties they wait for a bot to offer. */
  platform?: string[];
}

export interface CompletedAction extends ActionSummary {
  completedAt: string;
  /** Queue to completion (0 for a cache hit). */
  durationMs: number;
  /** null when the action did not run to an exit (setup failure, cancelled before it ran). */
  exitCode: number | null;
  /** The gRPC status code name of the operation: OK, DEADLINE_EXCEEDED, CANCELLED... */
  status: string;
  /** Answered from the action cache, not run. */
  cached: boolean;
}

export interface CacheStatus {
  ac: {
    entries: number;
    /** Lookups (GetActionResult and Execute) since the daemon started. */
    hits: number;
    misses: number;
    /** hits / (hits + misses); null before the first lookup. */
    hitRate: number | null;
    lastMinute: { hits: number; misses: number; hitRate: number | null };
    perSecond: { hits: number[]; misses: number[] };
  };
  cas: {
    blobs: number;
    bytes: number;
    /** When bytes was measured (it is counted periodically). */
    bytesMeasuredAt: string | null;
    /** The configured size budget; null when none is configured. */
    budgetBytes: number | null;
    disk: { totalBytes: number; freeBytes: number } | null;
    /**
     * The disk reserve kept for deletions (storage.disk-reserve): its size, whether it is in
     * place, and whether the file system is so full that only deletions write.
     */
    reserve?: { bytes: number; present: boolean; critical: boolean };
  };
}

export interface RpcStatus {
  /** Admin calls (the dashboard's own polling) are left out. */
  windowSeconds: number;
  calls: number;
  /**
   * Lookups answered "not found" (NOT_FOUND from GetActionResult, FetchBlob, FetchDirectory):
   * a cold cache's normal answer, not an error.
   */
  misses: number;
  /** Calls that failed: every status but OK, the misses above and the Remote Asset probes' INVALID_ARGUMENT. */
  errors: number;
  bytesIn: number;
  bytesOut: number;
  perSecond: { calls: number[]; bytesIn: number[]; bytesOut: number[] };
  /** Busiest first. */
  methods: Array<{ method: string; calls: number; misses: number; errors: number; meanMs: number }>;
}

/** The last garbage collection (the one gc-run record). */
export type GcStatus = GcRunRecord;
