import type { UpstreamStorage } from '../storage/create-storage.js';
import type { UpstreamStatus } from '../status/status-snapshot.js';

const iso = (ms: number | undefined): string => (ms ? new Date(ms).toISOString() : '');

/** The upstream part of a status snapshot: health, where lookups were answered, bytes each way, the queue. */
export function collectUpstreamStatus(u: UpstreamStorage): UpstreamStatus {
  const h = u.conn.health();
  const q = u.queue?.status();
  const s = u.stats;
  return {
    url: h.url,
    instance: h.instance,
    state: h.state,
    since: iso(h.since),
    lastError: h.lastError ?? '',
    lastErrorAt: iso(h.lastErrorAt),
    execEnabled: u.conn.capabilities?.execEnabled ?? false,
    cas: { ...s.cas, incomplete: 0 },
    ac: { ...s.ac },
    assets: { ...s.assets, incomplete: 0 },
    bytesDown: s.bytesDown,
    bytesUp: s.bytesUp,
    blobsDown: s.blobsDown,
    blobsUp: s.blobsUp,
    fetchErrors: s.fetchErrors,
    ...(q
      ? {
          queue: {
            blobs: q.blobs,
            actionResults: q.actionResults,
            assets: q.assets,
            blobBytes: q.blobBytes,
            done: q.done,
            dropped: q.dropped,
            failed: q.failed,
            oldestAt: iso(q.oldestAt),
            lastError: q.lastError ?? '',
          },
        }
      : {}),
  };
}
