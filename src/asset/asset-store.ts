import type { Digest } from '../digest/digest.js';
import type { InstanceName } from '../digest/instance-name.js';

export type AssetKind = 'blob' | 'directory';

export interface Qualifier {
  name: string;
  value: string;
}

/** What a push binds to each (uri, qualifiers) pair. */
export interface AssetBinding {
  kind: AssetKind;
  digest: Digest;
  referencesBlobs: Digest[];
  referencesDirectories: Digest[];
  /** Milliseconds since the epoch; undefined = never expires. */
  expireAt?: number;
}

export interface FoundAsset extends AssetBinding {
  uri: string;
  qualifiers: Qualifier[];
  pushedAt: number;
}

/**
 * Remote Asset bindings, per instance: (kind, URI, qualifier set) → digest and the blobs and
 * directories it references. URIs and qualifiers are opaque keys: nothing is ever fetched
 * from a URI. Implemented over LMDB (LmdbAssetStore) and decorated by completeness checking
 * (CompletenessCheckingAssetStore): a binding is served only while everything it references
 * is in the CAS.
 */
export interface AssetStore {
  /** The binding of one URI, unless absent, expired, or pushed before `oldestAcceptedMs`. */
  get(instance: InstanceName, kind: AssetKind, uri: string, qualifiers: readonly Qualifier[], options?: { oldestAcceptedMs?: number }): Promise<FoundAsset | undefined>;
  /** Bind every URI of `uris` (with these qualifiers) to `binding`. */
  put(instance: InstanceName, uris: readonly string[], qualifiers: readonly Qualifier[], binding: AssetBinding): Promise<void>;
  /** Forget a binding; with `pushedAt`, only if it was not pushed anew since. */
  delete(instance: InstanceName, kind: AssetKind, uri: string, qualifiers: readonly Qualifier[], options?: { pushedAt?: number }): Promise<void>;
}

/** The first URI whose binding is alive, complete and new enough; undefined when none is. */
export async function fetchAsset(
  store: AssetStore,
  instance: InstanceName,
  kind: AssetKind,
  uris: readonly string[],
  qualifiers: readonly Qualifier[],
  oldestAcceptedMs?: number,
): Promise<FoundAsset | undefined> {
  for (const uri of uris) {
    const found = await store.get(instance, kind, uri, qualifiers, { oldestAcceptedMs });
    if (found) return found;
  }
  return undefined;
}
