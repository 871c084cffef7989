import { describe, expect, it } from 'vitest';
import { reexec } from '../../src/gen/proto.js';
import type { GcProgress } from '../../src/gc/garbage-collector.js';
import type { GcRunSummary } from '../../src/gc/storage-gc.js';
import { gcProgressMessage, gcSummaryMessage, gcUpdateFromMessage, statusFromMessage, statusToMessage } from '../../src/services/admin-messages.js';
import { busySnapshot } from '../tui/fixtures.js';

const admin = reexec.admin.v1;
/** Through the wire: encoded and decoded as a client receives it. */
const viaWire = (m: reexec.admin.v1.ICollectGarbageProgress) => gcUpdateFromMessage(admin.CollectGarbageProgress.decode(admin.CollectGarbageProgress.encode(m).finish()));
/** What `--json` prints of a value. */
const json = (v: unknown): unknown => JSON.parse(JSON.stringify(v));

describe('the Admin API messages', () => {
  it('carry a status snapshot field for field: `reexec status --json` prints what the daemon collected', () => {
    const s = busySnapshot({
      connections: { open: 3, handshaking: 1, clients: 2, busiestClient: 2, limits: { maxConnections: 10, maxConnectionsPerClient: 5 }, accepted: 9, refused: { maxConnections: 0, maxConnectionsPerClient: 1 }, closed: { handshakeTimeout: 2, idle: 0 } },
    });
    s.cache.cas.reserve = { bytes: 64 << 20, present: true, critical: false };
    const back = statusFromMessage(admin.StatusSnapshot.decode(admin.StatusSnapshot.encode(statusToMessage(s)).finish()));
    expect(json(back)).toEqual(json(s));
  });

  it('keep null as null and absent as absent (a daemon without execution, metrics, gc runs or hits)', () => {
    const s = busySnapshot({ execution: null, gc: null, metrics: { url: null, error: 'cannot listen' } });
    s.cache.ac.hitRate = null;
    s.cache.cas.budgetBytes = null;
    s.cache.cas.bytesMeasuredAt = null;
    const back = statusFromMessage(admin.StatusSnapshot.decode(admin.StatusSnapshot.encode(statusToMessage(s)).finish()));
    expect(back.execution).toBeNull();
    expect(back.gc).toBeNull();
    expect(back.metrics).toEqual({ url: null, error: 'cannot listen' });
    expect(back.cache.ac.hitRate).toBeNull();
    expect(back.cache.cas.budgetBytes).toBeNull();
    expect('connections' in back).toBe(false);
    expect(json(back)).toEqual(json(s));
  });

  it('carry gc progress and the summary, with the optional parts only when the daemon sent them', () => {
    const summary: GcRunSummary = {
      dryRun: false,
      targetBytes: 0,
      ignoredGrace: true,
      before: { bytes: 10, count: 2 },
      after: { bytes: 0, count: 0 },
      freedBlobs: 2,
      freedBytes: 10,
      keptRecent: { blobs: 1, bytes: 5, evictableAt: 1_700_000_000 },
      keptInUse: { blobs: 0, bytes: 0 },
      reachedTarget: true,
      perBlobOverhead: 1024,
      durationMs: 12.5,
      reason: 'requested',
      orphanFiles: { files: 0, bytes: 0 },
      stagingCache: { entries: 1, bytes: 2, freedEntries: 0, freedBytes: 0, keptInUse: 0 },
      budget: { maxBytes: 1, highBytes: 1, lowBytes: 1, hardLimitBytes: 1, graceSeconds: 600 },
      diskReserve: { released: true, present: false, bytes: 64 },
    };
    expect(viaWire(gcSummaryMessage(summary))).toEqual({ summary });
    const { stagingCache: _s, diskReserve: _d, ignoredGrace: _i, targetBytes: _t, ...plain } = summary;
    const bare: GcRunSummary = { ...plain, keptRecent: { blobs: 0, bytes: 0 } };
    expect(viaWire(gcSummaryMessage(bare))).toEqual({ summary: bare });
    const progress: GcProgress = { phase: 'evicting', scanned: 1, total: 2, goalBytes: 100, freedBlobs: 1, freedBytes: 50 };
    expect(viaWire(gcProgressMessage(progress))).toEqual({ progress });
  });
});
