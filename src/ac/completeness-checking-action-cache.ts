import type { BlobStore } from '../cas/blob-store.js';
import { treeFileDigests, walkDirectories, directoryReferences } from '../cas/directory-walker.js';
import { Digest } from '../digest/digest.js';
import type { InstanceName } from '../digest/instance-name.js';
import { re, type IActionResult } from '../proto.js';
import type { ActionCache } from './action-cache.js';

/**
 * An action result is a hit only when every blob it refers to is still in the CAS: output
 * files, output trees and their Directories and files, stdout and stderr. A hit pointing at
 * evicted blobs ("Missing digest" in Bazel) is the most cited failure of REAPI caches.
 * Checking refreshes the access time of every referenced blob, so they stay together.
 */
export class CompletenessCheckingActionCache implements ActionCache {
  /** When entries were stored, by key, for `keepIncompleteSeconds`. */
  private readonly recentPuts = new Map<string, number>();

  constructor(
    private readonly base: ActionCache,
    private readonly cas: BlobStore,
    /**
     * An incomplete entry found on lookup is deleted (its blobs were evicted: it can never be a
     * hit again), unless stored this recently: a client may store a result before its blobs.
     */
    private readonly keepIncompleteSeconds = 600,
  ) {}

  async get(instance: InstanceName, action: Digest): Promise<IActionResult | undefined> {
    const result = await this.base.get(instance, action);
    if (!result) return undefined;
    if (await this.isComplete(result, action)) return result;
    const key = `${instance.value}\u0000${action.key}`;
    if (Date.now() - (this.recentPuts.get(key) ?? 0) > this.keepIncompleteSeconds * 1000) await this.base.delete?.(instance, action);
    return undefined;
  }

  put(instance: InstanceName, action: Digest, result: IActionResult): Promise<void> {
    const now = Date.now();
    const cutoff = now - this.keepIncompleteSeconds * 1000;
    for (const [k, at] of this.recentPuts) {
      if (at >= cutoff) break; // insertion order is time order
      this.recentPuts.delete(k);
    }
    const key = `${instance.value}\u0000${action.key}`;
    this.recentPuts.delete(key);
    this.recentPuts.set(key, now);
    return this.base.put(instance, action, result);
  }

  private async isComplete(result: IActionResult, action: Digest): Promise<boolean> {
    const fn = action.fn;
    try {
      const wanted: Digest[] = [];
      for (const f of result.outputFiles ?? []) wanted.push(Digest.fromProto(f.digest, fn));
      if (result.stdoutDigest) wanted.push(Digest.fromProto(result.stdoutDigest, fn));
      if (result.stderrDigest) wanted.push(Digest.fromProto(result.stderrDigest, fn));
      for (const d of result.outputDirectories ?? []) {
        if (d.treeDigest && d.treeDigest.hash) {
          const treeDigest = Digest.fromProto(d.treeDigest, fn);
          const bytes = await this.cas.get(treeDigest);
          if (!bytes) return false;
          wanted.push(...treeFileDigests(re.Tree.decode(bytes), fn));
        }
        if (d.rootDirectoryDigest && d.rootDirectoryDigest.hash) {
          for await (const { directory } of walkDirectories(this.cas, Digest.fromProto(d.rootDirectoryDigest, fn))) {
            wanted.push(...directoryReferences(directory, fn).files);
          }
        }
      }
      for (let i = 0; i < wanted.length; i += 10_000) {
        if ((await this.cas.findMissing(wanted.slice(i, i + 10_000))).length > 0) return false;
      }
      return true;
    } catch {
      // A missing Directory, or an unparseable reference: not a usable hit.
      return false;
    }
  }
}
