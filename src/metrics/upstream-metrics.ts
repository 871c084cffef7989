import { Counter, Gauge, type Registry } from 'prom-client';
import type { UpstreamStorage } from '../storage/create-storage.js';

/** The upstream, read at each scrape: health, lookups by where they were answered, bytes each way, the queue. */
export class UpstreamMetrics {
  constructor(registry: Registry, u: UpstreamStorage) {
    const registers = [registry];
    const url = u.conn.url;
    new Gauge({
      name: 'reexec_upstream_up',
      help: 'Whether the upstream is reachable and usable (1), or down or refused (0), by url.',
      labelNames: ['url'],
      registers,
      collect() {
        this.set({ url }, u.conn.health().state === 'up' ? 1 : 0);
      },
    });
    new Counter({
      name: 'reexec_upstream_lookups_total',
      help: 'Lookups of the stores in front of the upstream, by store (cas, ac, assets) and where they were answered (local, upstream, miss); upstream_down: local misses not asked because it was down.',
      labelNames: ['store', 'answer'],
      registers,
      collect() {
        this.reset();
        for (const [store, c] of [['cas', u.stats.cas], ['ac', u.stats.ac], ['assets', u.stats.assets]] as const) {
          this.inc({ store, answer: 'local' }, c.local);
          this.inc({ store, answer: 'upstream' }, c.upstream);
          this.inc({ store, answer: 'miss' }, c.miss);
          this.inc({ store, answer: 'upstream_down' }, c.upstreamDown);
        }
        this.inc({ store: 'ac', answer: 'incomplete' }, u.stats.ac.incomplete);
      },
    });
    new Counter({
      name: 'reexec_upstream_bytes_total',
      help: 'Blob bytes between this daemon and the upstream, by direction (down: fetched on local misses; up: uploaded by the write-behind queue).',
      labelNames: ['direction'],
      registers,
      collect() {
        this.reset();
        this.inc({ direction: 'down' }, u.stats.bytesDown);
        this.inc({ direction: 'up' }, u.stats.bytesUp);
      },
    });
    new Gauge({
      name: 'reexec_upstream_queue_items',
      help: 'Uploads waiting in the write-behind queue, by kind (blob, action_result, asset).',
      labelNames: ['kind'],
      registers,
      collect() {
        const q = u.queue?.status();
        this.set({ kind: 'blob' }, q?.blobs ?? 0);
        this.set({ kind: 'action_result' }, q?.actionResults ?? 0);
        this.set({ kind: 'asset' }, q?.assets ?? 0);
      },
    });
    new Counter({
      name: 'reexec_upstream_queue_outcomes_total',
      help: 'Items leaving the write-behind queue, by outcome (done, dropped: queue full, failed: given up).',
      labelNames: ['outcome'],
      registers,
      collect() {
        const q = u.queue?.status();
        this.reset();
        this.inc({ outcome: 'done' }, q?.done ?? 0);
        this.inc({ outcome: 'dropped' }, q?.dropped ?? 0);
        this.inc({ outcome: 'failed' }, q?.failed ?? 0);
      },
    });
  }
}
