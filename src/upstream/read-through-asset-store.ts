import * as grpc from '@grpc/grpc-js';
import type { AssetBinding, AssetKind, AssetStore, FoundAsset, Qualifier } from '../asset/asset-store.js';
import type { CompletenessCheck } from '../cas/completeness-check.js';
import { Digest } from '../digest/digest.js';
import type { InstanceName } from '../digest/instance-name.js';
import type { Logger } from '../util/logger.js';
import type { UpstreamCas } from './upstream-cas.js';
import { UpstreamError, type UpstreamConnection } from './upstream-connection.js';
import type { UpstreamStats } from './upstream-stats.js';
import type { WriteBehindQueue } from './write-behind-queue.js';

interface FetchResponse {
  status?: { code?: number; message?: string } | null;
  uri?: string;
  qualifiers?: Qualifier[];
  expiresAt?: { seconds?: number | { toNumber(): number }; nanos?: number } | null;
  blobDigest?: { hash?: string; sizeBytes?: number | { toNumber(): number } } | null;
  rootDirectoryDigest?: { hash?: string; sizeBytes?: number | { toNumber(): number } } | null;
}

/**
 * Remote Asset bindings in front of an upstream: a local miss asks the upstream's Fetch
 * service; a binding it returns is kept locally when the upstream holds what it names
 * (completeness check on the upstream). Pushes are stored locally, then written behind.
 * An upstream without Remote Asset (UNIMPLEMENTED: buildbox-casd, some Buildbarns) is
 * asked once, then no more.
 */
export class ReadThroughAssetStore implements AssetStore {
  private unsupported = false;

  constructor(
    private readonly local: AssetStore,
    private readonly conn: UpstreamConnection,
    private readonly upstream: UpstreamCas,
    private readonly upstreamCheck: CompletenessCheck,
    private readonly queue: WriteBehindQueue | undefined,
    private readonly stats: UpstreamStats,
    private readonly log: Logger,
  ) {}

  async get(instance: InstanceName, kind: AssetKind, uri: string, qualifiers: readonly Qualifier[], options?: { oldestAcceptedMs?: number }): Promise<FoundAsset | undefined> {
    const local = await this.local.get(instance, kind, uri, qualifiers, options);
    if (local) {
      this.stats.assets.local++;
      return local;
    }
    if (this.unsupported) return this.missed();
    if (!this.conn.usable) {
      this.stats.assets.upstreamDown++;
      return this.missed();
    }
    let res: FetchResponse;
    try {
      const oldest = options?.oldestAcceptedMs;
      res = await this.conn.unary<FetchResponse>('fetch', kind === 'blob' ? 'FetchBlob' : 'FetchDirectory', {
        instanceName: this.conn.instance,
        uris: [uri],
        qualifiers: [...qualifiers],
        ...(oldest !== undefined ? { oldestContentAccepted: { seconds: Math.floor(oldest / 1000), nanos: (oldest % 1000) * 1e6 } } : {}),
      });
    } catch (err) {
      if (err instanceof UpstreamError && err.code === grpc.status.UNIMPLEMENTED) {
        this.unsupported = true;
        this.log.info(`upstream ${this.conn.url} has no Remote Asset service: asset lookups stay local`);
      } else if (!(err instanceof UpstreamError && err.code === grpc.status.NOT_FOUND)) this.log.debug(`Fetch upstream for ${uri} failed: ${(err as Error).message}`);
      return this.missed();
    }
    if ((res.status?.code ?? 0) !== 0) return this.missed();
    const raw = kind === 'blob' ? res.blobDigest : res.rootDirectoryDigest;
    let digest: Digest;
    try {
      digest = Digest.fromProto(raw as never);
    } catch {
      return this.missed();
    }
    if (!this.upstream.supports(digest)) return this.missed();
    const complete = await this.upstreamCheck.isComplete(kind === 'blob' ? { blobs: [digest], directories: [] } : { blobs: [], directories: [digest] });
    if (!complete) return this.missed();
    const expires = res.expiresAt ? Number(res.expiresAt.seconds ?? 0) * 1000 + Math.floor((res.expiresAt.nanos ?? 0) / 1e6) : 0;
    const binding: AssetBinding = { kind, digest, referencesBlobs: [], referencesDirectories: [], ...(expires > 0 ? { expireAt: expires } : {}) };
    await this.local.put(instance, [uri], qualifiers, binding);
    this.stats.assets.upstream++;
    return (await this.local.get(instance, kind, uri, qualifiers)) ?? { ...binding, uri, qualifiers: [...qualifiers], pushedAt: Date.now() };
  }

  async put(instance: InstanceName, uris: readonly string[], qualifiers: readonly Qualifier[], binding: AssetBinding): Promise<void> {
    await this.local.put(instance, uris, qualifiers, binding);
    if (!this.unsupported) this.queue?.addAsset(instance, uris, qualifiers, binding);
  }

  delete(instance: InstanceName, kind: AssetKind, uri: string, qualifiers: readonly Qualifier[], options?: { pushedAt?: number }): Promise<void> {
    return this.local.delete(instance, kind, uri, qualifiers, options);
  }

  private missed(): undefined {
    this.stats.assets.miss++;
    return undefined;
  }
}
