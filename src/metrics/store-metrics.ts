import { Counter, Gauge, type Registry } from 'prom-client';
import { RollingCounter } from './rolling-counter.js';
import type { StoreSizes } from './store-usage.js';

/** Action cache lookups since the daemon started and over the last minute. */
export interface AcLookups {
  hits: number;
  misses: number;
  perSecond: { hits: number[]; misses: number[] };
}

/** Sizes of the CAS and the action cache, and how often lookups find what they ask for. */
export class StoreMetrics {
  private readonly acLookupsTotal: Counter<'result'>;
  private readonly casLookups: Counter<'operation' | 'result'>;
  private readonly recentAcHits: RollingCounter;
  private readonly recentAcMisses: RollingCounter;
  private acHits = 0;
  private acMisses = 0;
  /** Set by the daemon: what the CAS budget is, when one is configured. */
  budgetBytes: () => number | undefined = () => undefined;

  constructor(registry: Registry, usage: () => StoreSizes, now: () => number = Date.now) {
    const registers = [registry];
    this.acLookupsTotal = new Counter({ name: 'reexec_ac_lookups_total', help: 'Action cache lookups (GetActionResult and Execute), by result: hit or miss.', labelNames: ['result'], registers });
    this.casLookups = new Counter({
      name: 'reexec_cas_lookups_total',
      help: 'CAS lookups by operation (find_missing: per digest asked; read: whole or streamed reads) and result (hit: present, miss: absent).',
      labelNames: ['operation', 'result'],
      registers,
    });
    // Every series starts at zero, so rate() works from the first scrape.
    for (const result of ['hit', 'miss']) {
      this.acLookupsTotal.inc({ result }, 0);
      for (const operation of ['find_missing', 'read']) this.casLookups.inc({ operation, result }, 0);
    }
    new Gauge({ name: 'reexec_cas_blobs', help: 'Blobs in the CAS.', registers, collect() { this.set(usage().casBlobs); } });
    new Gauge({ name: 'reexec_cas_bytes', help: 'Bytes of the blobs in the CAS (their sizes, not disk usage).', registers, collect() { this.set(usage().casBytes); } });
    const self = this;
    new Gauge({
      name: 'reexec_cas_budget_bytes',
      help: 'The configured CAS size budget (absent when none is configured).',
      registers,
      collect() {
        const b = self.budgetBytes();
        if (b === undefined) this.reset();
        else this.set(b);
      },
    });
    new Gauge({ name: 'reexec_ac_entries', help: 'Entries in the action cache.', registers, collect() { this.set(usage().acEntries); } });
    new Gauge({
      name: 'reexec_data_dir_free_bytes',
      help: 'Free bytes on the file system holding the data dir.',
      registers,
      collect() {
        const d = usage().disk;
        if (d) this.set(d.freeBytes);
      },
    });
    this.recentAcHits = new RollingCounter(60, now);
    this.recentAcMisses = new RollingCounter(60, now);
  }

  recordAcLookup(hit: boolean): void {
    this.acLookupsTotal.inc({ result: hit ? 'hit' : 'miss' });
    if (hit) {
      this.acHits++;
      this.recentAcHits.add();
    } else {
      this.acMisses++;
      this.recentAcMisses.add();
    }
  }

  recordCasLookups(operation: 'find_missing' | 'read', hits: number, misses: number): void {
    if (hits) this.casLookups.inc({ operation, result: 'hit' }, hits);
    if (misses) this.casLookups.inc({ operation, result: 'miss' }, misses);
  }

  acLookups(): AcLookups {
    return { hits: this.acHits, misses: this.acMisses, perSecond: { hits: this.recentAcHits.series(), misses: this.recentAcMisses.series() } };
  }
}
