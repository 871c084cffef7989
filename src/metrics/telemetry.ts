import type { ConnectionStats } from '../daemon/connection-guard.js';
import { ConnectionMetrics } from './connection-metrics.js';
import { collectDefaultMetrics, Registry } from 'prom-client';
import type { Scheduler } from '../scheduler/scheduler.js';
import { CompressionMetrics } from './compression-metrics.js';
import { ExecutionMetrics, type RunningSource, type BotsSource } from './execution-metrics.js';
import { GcMetrics } from './gc-metrics.js';
import { RpcMetrics } from './rpc-metrics.js';
import { StoreMetrics } from './store-metrics.js';
import { UpstreamMetrics } from './upstream-metrics.js';
import type { UpstreamStorage } from '../storage/create-storage.js';
import type { StoreSizes } from './store-usage.js';

/**
 * Everything the daemon measures, in one registry per daemon (never prom-client's global
 * one: tests run several daemons in one process). /metrics exposes the registry; the status
 * snapshot reads the same objects' recent windows.
 */
export class Telemetry {
  readonly registry = new Registry();
  readonly rpc: RpcMetrics;
  readonly store: StoreMetrics;
  /** The garbage collector reports each run here. */
  readonly gc: GcMetrics;
  /** Compressed reads and writes of the CAS. */
  readonly compression: CompressionMetrics;

  constructor(usage: () => StoreSizes, now: () => number = Date.now) {
    collectDefaultMetrics({ register: this.registry });
    this.rpc = new RpcMetrics(this.registry, now);
    this.store = new StoreMetrics(this.registry, usage, now);
    this.gc = new GcMetrics(this.registry);
    this.compression = new CompressionMetrics(this.registry);
  }

  /** Count connections (the daemon's ConnectionGuard). */
  watchConnections(stats: () => ConnectionStats): void {
    new ConnectionMetrics(this.registry, stats);
  }

  /** Measure the upstream (when there is one). */
  watchUpstream(upstream: UpstreamStorage): void {
    new UpstreamMetrics(this.registry, upstream);
  }

  /** Start measuring remote execution (when it is enabled). */
  watchExecution(scheduler: Scheduler, workers: RunningSource, bots?: BotsSource): void {
    new ExecutionMetrics(this.registry, scheduler, workers, bots);
  }
}
