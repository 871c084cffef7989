/**
 * One garbage collection as everyone outside the collector sees it: metrics count it, the
 * status snapshot shows the last one (with `at`), the dashboard renders it. Declared once.
 */
export interface GcRun {
  /** "auto": the CAS passed its high watermark (or the disk its minimum); "manual": `reexec gc` or the Admin API. */
  trigger: 'auto' | 'manual';
  evictedBlobs: number;
  evictedBytes: number;
  durationSeconds: number;
  dryRun?: boolean;
  /** The run failed part way. */
  failed?: boolean;
}

/** A run and when it ended (ISO 8601). */
export interface GcRunRecord extends GcRun {
  at: string;
}
