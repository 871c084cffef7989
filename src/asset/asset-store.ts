import { createHash } from 'node:crypto';
import type { Database } from 'lmdb';
import type { BlobStore } from '../cas/blob-store.js';
import { directoryReferences, walkDirectories } from '../cas/directory-walker.js';
import { Digest } from '../digest/digest.js';
import { digestFunctionFromName } from '../digest/digest-function.js';
import type { InstanceName } from '../digest/instance-name.js';
import type { LmdbEnv } from '../store/lmdb-env.js';

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

interface StoredDigest {
  f: string;
  h: string;
  s: number;
}

interface AssetRecord {
  kind: AssetKind;
  d: StoredDigest;
  rb: StoredDigest[];
  rd: StoredDigest[];
  exp?: number;
  at: number;
}

export interface FoundAsset extends AssetBinding {
  uri: string;
  qualifiers: Qualifier[];
  pushedAt: number;
}

const pack = (d: Digest): StoredDigest => ({ f: d.fn.name, h: d.hash, s: d.sizeBytes });
const unpack = (s: StoredDigest): Digest => Digest.of(digestFunctionFromName(s.f)!, s.h, s.s);

/**
 * Remote Asset bindings, per instance: (kind, URI, qualifier set) → digest and the blobs and
 * directories it references. URIs and qualifiers are opaque keys: nothing is ever fetched
 * from a URI. A binding is served only while everything it references is in the CAS.
 */
export class AssetStore {
  private readonly db: Database<AssetRecord, string>;

  constructor(
    private readonly env: LmdbEnv,
    private readonly cas: BlobStore,
    /**
     * An incomplete binding found by a fetch is deleted (its blobs were evicted: it can never
     * be served again), unless pushed this recently: a client may push it before its blobs.
     */
    private readonly keepIncompleteSeconds = 600,
  ) {
    this.db = env.records<AssetRecord>('assets');
  }

  private static key(instance: InstanceName, kind: AssetKind, uri: string, qualifiers: readonly Qualifier[]): string {
    const q = [...qualifiers].map((x) => [x.name, x.value]).sort((a, b) => (a[0]! < b[0]! ? -1 : a[0]! > b[0]! ? 1 : a[1]! < b[1]! ? -1 : 1));
    // Hashed: URIs can be longer than LMDB's ~2 KB key limit.
    return createHash('sha256').update(JSON.stringify([instance.value, kind, uri, q])).digest('base64url');
  }

  async push(instance: InstanceName, uris: readonly string[], qualifiers: readonly Qualifier[], binding: AssetBinding): Promise<void> {
    const rec: AssetRecord = {
      kind: binding.kind,
      d: pack(binding.digest),
      rb: binding.referencesBlobs.map(pack),
      rd: binding.referencesDirectories.map(pack),
      exp: binding.expireAt,
      at: Date.now(),
    };
    await this.env.write(`storing the asset ${uris[0] ?? ''}`, () => Promise.all(uris.map((uri) => this.db.put(AssetStore.key(instance, binding.kind, uri, qualifiers), rec))));
  }

  /** The first URI whose binding is alive, complete and new enough; undefined when none is. */
  async fetch(
    instance: InstanceName,
    kind: AssetKind,
    uris: readonly string[],
    qualifiers: readonly Qualifier[],
    oldestAcceptedMs?: number,
  ): Promise<FoundAsset | undefined> {
    const now = Date.now();
    for (const uri of uris) {
      const key = AssetStore.key(instance, kind, uri, qualifiers);
      const rec = this.db.get(key);
      if (!rec) continue;
      if (rec.exp !== undefined && rec.exp <= now) continue;
      if (oldestAcceptedMs !== undefined && rec.at < oldestAcceptedMs) continue;
      const found: FoundAsset = {
        kind: rec.kind,
        digest: unpack(rec.d),
        referencesBlobs: rec.rb.map(unpack),
        referencesDirectories: rec.rd.map(unpack),
        expireAt: rec.exp,
        uri,
        qualifiers: [...qualifiers],
        pushedAt: rec.at,
      };
      if (await this.isComplete(found)) return found;
      if (now - rec.at > this.keepIncompleteSeconds * 1000) {
        // Unless pushed anew meanwhile.
        await this.env.write(
          `forgetting the asset ${uri}`,
          () =>
            this.db.transaction(() => {
              if (this.db.get(key)?.at === rec.at) this.db.remove(key);
            }),
          { deletion: true },
        );
      }
    }
    return undefined;
  }

  /** Everything the binding needs is in the CAS (refreshing its access times as it checks). */
  private async isComplete(asset: AssetBinding): Promise<boolean> {
    const blobs = [...asset.referencesBlobs];
    const dirs = [...asset.referencesDirectories];
    if (asset.kind === 'blob') blobs.push(asset.digest);
    else dirs.push(asset.digest);
    try {
      for (const root of dirs) {
        for await (const { directory } of walkDirectories(this.cas, root)) blobs.push(...directoryReferences(directory, root.fn).files);
      }
      for (let i = 0; i < blobs.length; i += 10_000) {
        if ((await this.cas.findMissing(blobs.slice(i, i + 10_000))).length > 0) return false;
      }
      return true;
    } catch {
      return false;
    }
  }
}
