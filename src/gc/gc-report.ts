import type { GcProgress } from './garbage-collector.js';
import { formatBytes } from './storage-budget.js';
import type { GcRunSummary } from './storage-gc.js';

const count = (n: number): string => n.toLocaleString('en-US');
const seconds = (ms: number): string => (ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`);
const duration = (s: number): string => (s % 86400 === 0 && s > 0 ? `${s / 86400} d` : s % 3600 === 0 && s > 0 ? `${s / 3600} h` : s % 60 === 0 && s > 0 ? `${s / 60} min` : `${s} s`);

/** The summary `reexec gc` prints. */
export function formatGcSummary(s: GcRunSummary): string {
  const lines: string[] = [];
  const would = s.dryRun ? 'Dry run: would free' : 'Freed';
  lines.push(`${would} ${count(s.freedBlobs)} blob(s), ${formatBytes(s.freedBytes)}, in ${seconds(s.durationMs)}.`);
  const goal: string[] = [];
  if (s.targetBytes !== undefined) goal.push(`target ${formatBytes(s.targetBytes)}`);
  if (s.maxAgeSeconds !== undefined) goal.push(`unused for more than ${duration(s.maxAgeSeconds)}`);
  goal.push(`budget ${formatBytes(s.budget.maxBytes)}`);
  const footprint = (u: { bytes: number; count: number }): string => formatBytes(u.bytes + u.count * s.perBlobOverhead);
  lines.push(
    `CAS: ${footprint(s.before)} in ${count(s.before.count)} blobs → ${footprint(s.after)} in ${count(s.after.count)} blobs${s.dryRun ? ' (after a real run)' : ''} (${goal.join('; ')}).`,
  );
  if (s.perBlobOverhead) lines.push(`(Sizes count ${formatBytes(s.perBlobOverhead)} per blob for its index entry and storage overhead, as the budget does.)`);
  if (!s.reachedTarget && s.targetBytes !== undefined) {
    const at = s.keptRecent.evictableAt;
    const when =
      s.keptRecent.bytes > 0 && at !== undefined
        ? ` The first of those used within the grace period becomes evictable at ${new Date(at * 1000).toLocaleString()} (in ${duration(Math.max(1, Math.round(at - Date.now() / 1000)))}); ` +
          '`reexec gc --ignore-grace` evicts them now (never inputs of queued or running actions).'
        : '';
    lines.push(
      `The CAS stays above the target: ${formatBytes(s.keptRecent.bytes)} were used within the grace period (${duration(s.budget.graceSeconds)}, storage.grace-period) ` +
        `and ${formatBytes(s.keptInUse.bytes)} are inputs of queued or running actions; those are not evicted.${when}`,
    );
  } else if (s.keptInUse.blobs > 0) {
    lines.push(`Kept ${count(s.keptInUse.blobs)} blob(s) (${formatBytes(s.keptInUse.bytes)}) that queued or running actions need.`);
  }
  if (s.ignoredGrace) lines.push('The grace period was ignored (--ignore-grace): blobs used within it were evictable too.');
  const r = s.diskReserve;
  if (r) {
    lines.push(
      r.released
        ? `The file system was full: the disk reserve (${formatBytes(r.bytes)}) was released to let the deletions commit${r.present ? ', and re-created.' : '; it is re-created once there is room.'}`
        : `The disk reserve (${formatBytes(r.bytes)}) is not in place: there is no room for it yet (free space on the file system, or evict more).`,
    );
  }
  if (s.orphanFiles.files > 0) lines.push(`Removed ${count(s.orphanFiles.files)} orphan blob file(s) (${formatBytes(s.orphanFiles.bytes)}) left by an interrupted run.`);
  const c = s.stagingCache;
  if (c && (c.entries > 0 || c.freedEntries > 0)) {
    lines.push(
      `Staging cache: ${formatBytes(c.bytes)} in ${count(c.entries)} entries${c.freedEntries ? `; ${s.dryRun ? 'would remove' : 'removed'} ${count(c.freedEntries)} (${formatBytes(c.freedBytes)})` : ''}.`,
    );
  }
  return lines.join('\n');
}

/** A one-line progress bar for a terminal, redrawn in place. */
export class GcProgressBar {
  private drawn = false;

  constructor(
    private readonly out: { write(s: string): unknown; columns?: number },
    private readonly width = 30,
  ) {}

  update(p: GcProgress): void {
    const fraction =
      p.phase === 'evicting' && p.goalBytes > 0 ? Math.min(1, p.freedBytes / p.goalBytes) : p.total > 0 ? Math.min(1, p.scanned / p.total) : 0;
    const filled = Math.round(fraction * this.width);
    const bar = `[${'#'.repeat(filled)}${'-'.repeat(this.width - filled)}] ${String(Math.round(fraction * 100)).padStart(3)}%`;
    const detail =
      p.phase === 'scanning'
        ? `scanning the index: ${count(p.scanned)} / ${count(p.total)} blobs`
        : `evicting: ${formatBytes(p.freedBytes)} of ${formatBytes(p.goalBytes)}, ${count(p.freedBlobs)} blobs`;
    let line = `${bar}  ${detail}`;
    if (this.out.columns && line.length >= this.out.columns) line = line.slice(0, this.out.columns - 1);
    this.out.write(`\r\x1b[2K${line}`);
    this.drawn = true;
  }

  /** Clear the bar before the summary is printed. */
  done(): void {
    if (this.drawn) this.out.write('\r\x1b[2K');
    this.drawn = false;
  }
}
