import type { EventEmitter } from 'node:events';
import { Digest } from '../digest/digest.js';
import type { Execution, Job } from '../scheduler/operation.js';

/**
 * Blobs that must not be evicted because something holds them: the inputs of queued and
 * running actions. Reference-counted by digest key, since actions share inputs.
 */
export class InUseDigests {
  private readonly counts = new Map<string, number>();
  private readonly holds = new Map<string, string[]>();

  /** Hold `keys` under `holder` (once: holding again under the same name changes nothing). */
  hold(holder: string, keys: Iterable<string>): void {
    if (this.holds.has(holder)) return;
    const unique = [...new Set(keys)];
    this.holds.set(holder, unique);
    for (const k of unique) this.counts.set(k, (this.counts.get(k) ?? 0) + 1);
  }

  release(holder: string): void {
    const keys = this.holds.get(holder);
    if (!keys) return;
    this.holds.delete(holder);
    for (const k of keys) {
      const n = (this.counts.get(k) ?? 1) - 1;
      if (n > 0) this.counts.set(k, n);
      else this.counts.delete(k);
    }
  }

  has(key: string): boolean {
    return this.counts.has(key);
  }

  /** Distinct digests held. */
  get size(): number {
    return this.counts.size;
  }
}

/** Every blob an action needs to run: Action, Command, and the whole input tree. */
export function jobDigestKeys(job: Job): string[] {
  const keys = [job.actionDigest.key];
  try {
    keys.push(Digest.fromProto(job.action.commandDigest, job.actionDigest.fn).key);
  } catch {
    /* a stub restored from the journal: its Command is re-read when it runs */
  }
  const tree = job.inputTree;
  if (tree) {
    keys.push(tree.root.key);
    for (const k of tree.directories.keys()) keys.push(k);
    for (const d of tree.files.values()) keys.push(d.key);
  }
  return keys;
}

/**
 * Keep `inUse` in step with a scheduler: an execution's inputs are held from the moment it is
 * queued until it completes. Subscribe before operations are restored from the journal.
 */
export function holdInputsOfQueuedActions(scheduler: EventEmitter, inUse: InUseDigests): void {
  scheduler.on('execution', (ex: Execution) => {
    if (ex.stage === 'COMPLETED') inUse.release(ex.id);
    else inUse.hold(ex.id, jobDigestKeys(ex.job));
  });
}
