import { createHash } from 'node:crypto';
import type { Database } from 'lmdb';
import { Digest } from '../digest/digest.js';
import { digestFunctionFromName } from '../digest/digest-function.js';
import type { InstanceName } from '../digest/instance-name.js';
import type { LmdbEnv } from '../store/lmdb-env.js';
import { systemClock, type Clock } from '../util/clock.js';
import type { AssetBinding, AssetKind, AssetStore, FoundAsset, Qualifier } from './asset-store.js';

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

const pack = (d: Digest): StoredDigest => ({ f: d.fn.name, h: d.hash, s: d.sizeBytes });
const unpack = (s: StoredDigest): Digest => Digest.of(digestFunctionFromName(s.f)!, s.h, s.s);

/** Asset bindings as msgpack records in an LMDB database, keyed by a hash of (instance, kind, URI, qualifiers). */
export class LmdbAssetStore implements AssetStore {
  private readonly db: Database<AssetRecord, string>;

  constructor(
    private readonly env: LmdbEnv,
    private readonly clock: Clock = systemClock,
  ) {
    this.db = env.records<AssetRecord>('assets');
  }

  private static key(instance: InstanceName, kind: AssetKind, uri: string, qualifiers: readonly Qualifier[]): string {
    const q = [...qualifiers].map((x) => [x.name, x.value]).sort((a, b) => (a[0]! < b[0]! ? -1 : a[0]! > b[0]! ? 1 : a[1]! < b[1]! ? -1 : 1));
    // Hashed: URIs can be longer than LMDB's ~2 KB key limit.
    return createHash('sha256').update(JSON.stringify([instance.value, kind, uri, q])).digest('base64url');
  }

  async put(instance: InstanceName, uris: readonly string[], qualifiers: readonly Qualifier[], binding: AssetBinding): Promise<void> {
    const rec: AssetRecord = {
      kind: binding.kind,
      d: pack(binding.digest),
      rb: binding.referencesBlobs.map(pack),
      rd: binding.referencesDirectories.map(pack),
      exp: binding.expireAt,
      at: this.clock.now(),
    };
    await this.env.write(`storing the asset ${uris[0] ?? ''}`, () => Promise.all(uris.map((uri) => this.db.put(LmdbAssetStore.key(instance, binding.kind, uri, qualifiers), rec))));
  }

  async get(instance: InstanceName, kind: AssetKind, uri: string, qualifiers: readonly Qualifier[], options: { oldestAcceptedMs?: number } = {}): Promise<FoundAsset | undefined> {
    const rec = this.db.get(LmdbAssetStore.key(instance, kind, uri, qualifiers));
    if (!rec) return undefined;
    if (rec.exp !== undefined && rec.exp <= this.clock.now()) return undefined;
    if (options.oldestAcceptedMs !== undefined && rec.at < options.oldestAcceptedMs) return undefined;
    return {
      kind: rec.kind,
      digest: unpack(rec.d),
      referencesBlobs: rec.rb.map(unpack),
      referencesDirectories: rec.rd.map(unpack),
      expireAt: rec.exp,
      uri,
      qualifiers: [...qualifiers],
      pushedAt: rec.at,
    };
  }

  async delete(instance: InstanceName, kind: AssetKind, uri: string, qualifiers: readonly Qualifier[], options: { pushedAt?: number } = {}): Promise<void> {
    const key = LmdbAssetStore.key(instance, kind, uri, qualifiers);
    await this.env.write(
      `forgetting the asset ${uri}`,
      () =>
        this.db.transaction(() => {
          const rec = this.db.get(key);
          if (rec && (options.pushedAt === undefined || rec.at === options.pushedAt)) this.db.remove(key);
        }),
      { deletion: true },
    );
  }
}
