import { reexec } from '../gen/proto.js';
import type { GcProgress } from '../gc/garbage-collector.js';
import type { GcRunSummary } from '../gc/storage-gc.js';
import type { StatusSnapshot } from '../status/status-snapshot.js';

/**
 * The Admin API's messages to and from the TypeScript types the daemon produces and the CLI
 * renders. The messages mirror the types field for field (protos/reexec/admin/v1/admin.proto);
 * what the types say with null, the wire says by leaving an optional field unset.
 */
const admin = reexec.admin.v1;

const TO_OBJECT = { defaults: true, longs: Number, arrays: true } as const;

const dropNull = <T extends object>(o: T, key: keyof T): void => {
  if (o[key] === null) delete o[key];
};

type Nullable<T> = T | null | undefined;
const orNull = <T>(v: Nullable<T>): T | null => (v === undefined ? null : v);

export function statusToMessage(s: StatusSnapshot): reexec.admin.v1.StatusSnapshot {
  return admin.StatusSnapshot.fromObject(s as unknown as Record<string, unknown>);
}

export function statusFromMessage(m: reexec.admin.v1.StatusSnapshot): StatusSnapshot {
  const s = admin.StatusSnapshot.toObject(m, TO_OBJECT) as unknown as StatusSnapshot;
  s.metrics = { ...s.metrics, url: orNull(s.metrics?.url) };
  const { ac, cas } = s.cache;
  ac.hitRate = orNull(ac.hitRate);
  ac.lastMinute.hitRate = orNull(ac.lastMinute.hitRate);
  cas.bytesMeasuredAt = orNull(cas.bytesMeasuredAt);
  cas.budgetBytes = orNull(cas.budgetBytes);
  for (const a of s.execution?.recent ?? []) a.exitCode = orNull(a.exitCode);
  // Repeated fields the daemon leaves out when they do not apply: absent again.
  for (const q of s.execution?.queued ?? []) if (q.platform?.length === 0) delete q.platform;
  if (s.execution && s.execution.bots?.length === 0) delete s.execution.bots;
  // Optional messages: absent, as the daemon left them (toObject's defaults make them null).
  dropNull(s, 'connections');
  dropNull(s, 'upstream');
  if (s.upstream) dropNull(s.upstream, 'queue');
  dropNull(cas, 'reserve');
  for (const p of s.execution?.pools ?? []) if (!p.upstream) delete p.upstream;
  return s;
}

export function gcProgressMessage(p: GcProgress): reexec.admin.v1.ICollectGarbageProgress {
  return { done: false, progress: admin.GcProgress.fromObject(p as unknown as Record<string, unknown>) };
}

export function gcSummaryMessage(s: GcRunSummary): reexec.admin.v1.ICollectGarbageProgress {
  return { done: true, summary: admin.GcRunSummary.fromObject(s as unknown as Record<string, unknown>) };
}

/** One streamed update: progress, or (the last) the summary. */
export function gcUpdateFromMessage(m: reexec.admin.v1.CollectGarbageProgress): { progress: GcProgress } | { summary: GcRunSummary } | undefined {
  if (m.summary) {
    const summary = admin.GcRunSummary.toObject(m.summary as reexec.admin.v1.GcRunSummary, TO_OBJECT) as unknown as GcRunSummary;
    dropNull(summary, 'stagingCache');
    dropNull(summary, 'diskReserve');
    return { summary };
  }
  if (m.progress) return { progress: admin.GcProgress.toObject(m.progress as reexec.admin.v1.GcProgress, TO_OBJECT) as unknown as GcProgress };
  return undefined;
}
