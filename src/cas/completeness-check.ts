import type { Clock } from '../util/clock.js';
import { systemClock } from '../util/clock.js';
import { re } from '../proto.js';
import { findMissingInChunks, type BlobStore } from './blob-store.js';
import { directoryReferences, treeFileDigests, walkDirectories } from './directory-walker.js';
import type { Digest } from '../digest/digest.js';

/** What a cached entry (an ActionResult, an asset binding) needs from the CAS to be served. */
export interface References {
  /** Blobs referred to directly. */
  blobs: Digest[];
  /** Root Directories: every Directory and file under each. */
  directories: Digest[];
  /** Tree messages (output directories): the Tree blob and every file it lists. */
  trees?: Digest[];
}

/**
 * "Is this entry complete, and may it be dropped when it is not": the one rule the action
 * cache and the asset store share. A hit pointing at evicted blobs ("Missing digest" in Bazel)
 * is the most cited failure of REAPI caches, so an entry is served only when everything it
 * refers to is in the CAS; checking refreshes the access time of every blob, so they stay
 * together. An incomplete entry is dropped (it can never be a hit again), unless it was stored
 * within the last `keepIncompleteSeconds`: a client may store an entry before its blobs.
 */
export class CompletenessCheck {
  constructor(
    private readonly cas: BlobStore,
    private readonly keepIncompleteSeconds = 600,
    private readonly clock: Clock = systemClock,
  ) {}

  async isComplete(refs: References, options: { signal?: AbortSignal } = {}): Promise<boolean> {
    try {
      const wanted = [...refs.blobs];
      for (const tree of refs.trees ?? []) {
        const bytes = await this.cas.get(tree, options);
        if (!bytes) return false;
        wanted.push(...treeFileDigests(re.Tree.decode(bytes), tree.fn));
      }
      for (const root of refs.directories) {
        for await (const { directory } of walkDirectories(this.cas, root, { signal: options.signal })) wanted.push(...directoryReferences(directory, root.fn).files);
      }
      return (await findMissingInChunks(this.cas, wanted, { ...options, stopAtFirst: true })).length === 0;
    } catch {
      // A missing Directory, or an unparseable reference: not a usable entry.
      return false;
    }
  }

  /** An incomplete entry stored at `storedAtMs` (0: unknown) may be dropped. */
  mayDrop(storedAtMs: number): boolean {
    return this.clock.now() - storedAtMs > this.keepIncompleteSeconds * 1000;
  }

  /** Entries stored before this (ms) are past the grace period. */
  graceCutoff(): number {
    return this.clock.now() - this.keepIncompleteSeconds * 1000;
  }

  now(): number {
    return this.clock.now();
  }
}
