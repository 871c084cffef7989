import type { CompletenessCheck, References } from '../cas/completeness-check.js';
import { Digest } from '../digest/digest.js';
import type { InstanceName } from '../digest/instance-name.js';
import type { IActionResult } from '../proto.js';
import type { ActionCache } from './action-cache.js';

/** Everything an ActionResult refers to: output files, output trees and their files, stdout and stderr. */
export function actionResultReferences(result: IActionResult, action: Digest): References {
  const fn = action.fn;
  const refs: Required<References> = { blobs: [], directories: [], trees: [] };
  for (const f of result.outputFiles ?? []) refs.blobs.push(Digest.fromProto(f.digest, fn));
  if (result.stdoutDigest) refs.blobs.push(Digest.fromProto(result.stdoutDigest, fn));
  if (result.stderrDigest) refs.blobs.push(Digest.fromProto(result.stderrDigest, fn));
  for (const d of result.outputDirectories ?? []) {
    if (d.treeDigest && d.treeDigest.hash) refs.trees.push(Digest.fromProto(d.treeDigest, fn));
    if (d.rootDirectoryDigest && d.rootDirectoryDigest.hash) refs.directories.push(Digest.fromProto(d.rootDirectoryDigest, fn));
  }
  return refs;
}

/**
 * An action result is a hit only when every blob it refers to is still in the CAS (the rule
 * lives in CompletenessCheck, shared with the asset store). The LMDB cache keeps no time of
 * storing, so recent puts are remembered here for the grace period.
 */
export class CompletenessCheckingActionCache implements ActionCache {
  /** When entries were stored, by key, for the check's grace period. */
  private readonly recentPuts = new Map<string, number>();

  constructor(
    private readonly base: ActionCache,
    private readonly check: CompletenessCheck,
  ) {}

  async get(instance: InstanceName, action: Digest): Promise<IActionResult | undefined> {
    const result = await this.base.get(instance, action);
    if (!result) return undefined;
    let complete: boolean;
    try {
      complete = await this.check.isComplete(actionResultReferences(result, action));
    } catch {
      complete = false; // an unparseable reference: never a usable hit
    }
    if (complete) return result;
    if (this.check.mayDrop(this.recentPuts.get(key(instance, action)) ?? 0)) await this.base.delete(instance, action);
    return undefined;
  }

  put(instance: InstanceName, action: Digest, result: IActionResult): Promise<void> {
    const cutoff = this.check.graceCutoff();
    for (const [k, at] of this.recentPuts) {
      if (at >= cutoff) break; // insertion order is time order
      this.recentPuts.delete(k);
    }
    const k = key(instance, action);
    this.recentPuts.delete(k);
    this.recentPuts.set(k, this.check.now());
    return this.base.put(instance, action, result);
  }

  delete(instance: InstanceName, action: Digest): Promise<void> {
    this.recentPuts.delete(key(instance, action));
    return this.base.delete(instance, action);
  }
}

const key = (instance: InstanceName, action: Digest): string => `${instance.value}\u0000${action.key}`;
