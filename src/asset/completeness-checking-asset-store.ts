import type { CompletenessCheck } from '../cas/completeness-check.js';
import type { InstanceName } from '../digest/instance-name.js';
import type { AssetBinding, AssetKind, AssetStore, FoundAsset, Qualifier } from './asset-store.js';

/**
 * A binding is served only while everything it references is in the CAS (CompletenessCheck,
 * shared with the action cache). An incomplete one is deleted once past the grace period,
 * unless pushed anew meanwhile.
 */
export class CompletenessCheckingAssetStore implements AssetStore {
  constructor(
    private readonly base: AssetStore,
    private readonly check: CompletenessCheck,
  ) {}

  async get(instance: InstanceName, kind: AssetKind, uri: string, qualifiers: readonly Qualifier[], options?: { oldestAcceptedMs?: number }): Promise<FoundAsset | undefined> {
    const found = await this.base.get(instance, kind, uri, qualifiers, options);
    if (!found) return undefined;
    const blobs = [...found.referencesBlobs];
    const directories = [...found.referencesDirectories];
    if (found.kind === 'blob') blobs.push(found.digest);
    else directories.push(found.digest);
    if (await this.check.isComplete({ blobs, directories })) return found;
    if (this.check.mayDrop(found.pushedAt)) await this.base.delete(instance, kind, uri, qualifiers, { pushedAt: found.pushedAt });
    return undefined;
  }

  put(instance: InstanceName, uris: readonly string[], qualifiers: readonly Qualifier[], binding: AssetBinding): Promise<void> {
    return this.base.put(instance, uris, qualifiers, binding);
  }

  delete(instance: InstanceName, kind: AssetKind, uri: string, qualifiers: readonly Qualifier[], options?: { pushedAt?: number }): Promise<void> {
    return this.base.delete(instance, kind, uri, qualifiers, options);
  }
}
