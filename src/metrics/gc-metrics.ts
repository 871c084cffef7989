import { Counter, Histogram, type Registry } from 'prom-client';

import type { GcRun, GcRunRecord } from '../gc/gc-run.js';

/** Garbage collection metrics. The collector calls recordRun() once per run. */
export class GcMetrics {
  private readonly runs: Counter<'trigger' | 'result'>;
  private readonly blobs: Counter<'trigger'>;
  private readonly bytes: Counter<'trigger'>;
  private readonly duration: Histogram<'trigger'>;
  private last: GcRunRecord | undefined;

  constructor(registry: Registry) {
    const registers = [registry];
    this.runs = new Counter({ name: 'reexec_gc_runs_total', help: 'Garbage collection runs, by trigger (auto, manual) and result (ok, dry_run, failed).', labelNames: ['trigger', 'result'], registers });
    this.blobs = new Counter({ name: 'reexec_gc_evicted_blobs_total', help: 'Blobs evicted by garbage collection.', labelNames: ['trigger'], registers });
    this.bytes = new Counter({ name: 'reexec_gc_evicted_bytes_total', help: 'Bytes evicted by garbage collection.', labelNames: ['trigger'], registers });
    this.duration = new Histogram({ name: 'reexec_gc_duration_seconds', help: 'Duration of garbage collection runs.', labelNames: ['trigger'], buckets: [0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800], registers });
    for (const trigger of ['auto', 'manual']) this.runs.inc({ trigger, result: 'ok' }, 0);
  }

  recordRun(run: GcRun): void {
    const trigger = { trigger: run.trigger };
    this.runs.inc({ ...trigger, result: run.failed ? 'failed' : run.dryRun ? 'dry_run' : 'ok' });
    this.duration.observe(trigger, run.durationSeconds);
    if (!run.dryRun) {
      this.blobs.inc(trigger, run.evictedBlobs);
      this.bytes.inc(trigger, run.evictedBytes);
    }
    this.last = { ...run, at: new Date().toISOString() };
  }

  /** The last run, for the status snapshot. */
  lastRun(): GcRunRecord | undefined {
    return this.last;
  }
}
