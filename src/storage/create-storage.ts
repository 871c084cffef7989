import { CompletenessCheckingActionCache } from '../ac/completeness-checking-action-cache.js';
import type { ActionCache } from '../ac/action-cache.js';
import { LmdbActionCache } from '../ac/lmdb-action-cache.js';
import type { AssetStore } from '../asset/asset-store.js';
import { CompletenessCheckingAssetStore } from '../asset/completeness-checking-asset-store.js';
import { LmdbAssetStore } from '../asset/lmdb-asset-store.js';
import type { BlobStore } from '../cas/blob-store.js';
import { CompletenessCheck } from '../cas/completeness-check.js';
import { EmptyBlobInjectingStore } from '../cas/empty-blob-injecting-store.js';
import { DEFAULT_BLOB_STORE_OPTIONS, LmdbBlobStore, type LmdbBlobStoreOptions } from '../cas/lmdb-blob-store.js';
import { VerifyingBlobStore } from '../cas/verifying-store.js';
import type { Config } from '../config/config.js';
import type { LocalBlobStore } from '../cas/local-blob-store.js';
import { SizeLimitingBlobStore } from '../gc/size-limiting-blob-store.js';
import { resolveStorageBudget, touchIntervalFor, type StorageBudget } from '../gc/storage-budget.js';
import { MeteredActionCache } from '../metrics/metered-action-cache.js';
import { MeteredBlobStore } from '../metrics/metered-blob-store.js';
import type { StoreMetrics } from '../metrics/store-metrics.js';
import { StoreUsageSampler, type StoreSizes } from '../metrics/store-usage.js';
import type { DiskSpace } from '../store/disk-space.js';
import type { LmdbEnv } from '../store/lmdb-env.js';
import { ReadThroughActionCache } from '../upstream/read-through-action-cache.js';
import { ReadThroughAssetStore } from '../upstream/read-through-asset-store.js';
import { ReadThroughBlobStore } from '../upstream/read-through-blob-store.js';
import { UpstreamCas } from '../upstream/upstream-cas.js';
import type { UpstreamConnection } from '../upstream/upstream-connection.js';
import { UpstreamStats } from '../upstream/upstream-stats.js';
import { WriteBehindQueue } from '../upstream/write-behind-queue.js';
import { systemClock, type Clock } from '../util/clock.js';
import { silentLogger, type Logger } from '../util/logger.js';

export type { LocalBlobStore };

/** The storage of one data dir, composed: what services, execution, gc and status use. */
export interface Storage {
  /** The CAS as clients see it: metered, size-limited, verified, empty blob always present. */
  readonly cas: BlobStore;
  /** The action cache: metered, completeness-checked. */
  readonly ac: ActionCache;
  /** Remote Asset bindings: completeness-checked. */
  readonly assets: AssetStore;
  /** The local CAS below the decorators, for gc and staging only. */
  readonly local: LocalBlobStore;
  /** The local CAS chain below the read-through (verified, size-limited): what forwarded actions' outputs are copied into. */
  readonly localCas: BlobStore;
  readonly budget: StorageBudget;
  /** The upstream side, when the daemon stands in front of one: counters and the write-behind queue. */
  readonly upstream?: UpstreamStorage;
  /** Sizes of the CAS, the action cache and the disk, cheap enough for every scrape. */
  usage(): StoreSizes;
  /** Stop background sampling (before the LMDB environment closes). */
  close(): Promise<void>;
}

export interface UpstreamStorage {
  conn: UpstreamConnection;
  stats: UpstreamStats;
  /** Undefined when upstream.push is false. */
  queue: WriteBehindQueue | undefined;
  /** The upstream's CAS (FindMissing, reads, uploads), for those who forward work to it. */
  cas: UpstreamCas;
}

export interface StorageDeps {
  /** The upstream to read through and write behind to (src/upstream/); none: local only. */
  upstream?: UpstreamConnection;
  log?: Logger;
  /** The data dir's LMDB environment (opened, and closed, by the data dir's owner). */
  env: LmdbEnv;
  /** The budget (resolved before the environment opens: its disk reserve comes first); default: resolved here. */
  budget?: StorageBudget;
  /** The data dir's disk space (reserve, headroom, free bytes): uploads keep out of it. */
  space?: DiskSpace;
  /** Why eviction cannot make room now (the collector's answer), for the "cache is full" message. */
  whyNothingEvictable?: () => string | undefined;
  /** Where CAS and action-cache lookups are counted; none: not metered (offline gc). */
  metrics?: StoreMetrics;
  clock?: Clock;
}

/** The local CAS chain: verified writes over an always-present empty blob over LMDB. */
export function createLocalCas(env: LmdbEnv, dataDir: string, options: Partial<LmdbBlobStoreOptions> = {}): { store: BlobStore; base: LmdbBlobStore } {
  const base = new LmdbBlobStore(env, dataDir, { ...DEFAULT_BLOB_STORE_OPTIONS, ...options });
  return { store: new VerifyingBlobStore(new EmptyBlobInjectingStore(base)), base };
}

/**
 * The one place that composes storage and knows LMDB. Decorators wrap a base and change one
 * thing each; the order is the contract:
 *
 *   cas    = Metered([ReadThrough](SizeLimiting(Verifying(EmptyBlobInjecting(LmdbBlobStore)))))
 *   ac     = Metered([ReadThrough](CompletenessChecking(LmdbActionCache)))
 *   assets = [ReadThrough](CompletenessChecking(LmdbAssetStore))
 *
 * The ReadThrough decorators (src/upstream/) are there when the daemon stands in front of an
 * upstream: fills from it go through the local chain (verified, within the budget), writes
 * are queued behind to it (the queue reads the local store below the read-through), and
 * the local completeness checks see blobs the upstream holds as present (they are fetched
 * when read).
 */
export async function createStorage(config: Pick<Config, 'dataDir' | 'storage' | 'source'>, deps: StorageDeps): Promise<Storage> {
  const { env, metrics, clock = systemClock } = deps;
  const budget = deps.budget ?? (await resolveStorageBudget(config));
  const { store: verified, base } = createLocalCas(env, config.dataDir, {
    inlineMaxBytes: config.storage.inlineMaxBytes,
    fsync: config.storage.fsync,
    touchIntervalSeconds: touchIntervalFor(budget.graceSeconds),
    clock,
  });
  await base.removeStaleUploads();
  const limited = new SizeLimitingBlobStore(verified, budget, {
    usage: () => base.usage(),
    space: deps.space,
    configHint: config.source ?? 'the config file',
    whyNothingEvictable: () => deps.whyNothingEvictable?.(),
  });
  const lmdbAc = new LmdbActionCache(env);
  let upstream: UpstreamStorage | undefined;
  if (deps.upstream) {
    const conn = deps.upstream;
    const upstreamCas = new UpstreamCas(conn);
    const stats = new UpstreamStats();
    const queue = conn.config.push
      ? new WriteBehindQueue({ env, conn, upstream: upstreamCas, local: limited, localAc: lmdbAc, stats, log: deps.log ?? silentLogger, maxItems: conn.config.queue.maxItems, concurrency: conn.config.queue.concurrency, retry: conn.config.retry })
      : undefined;
    upstream = { conn, stats, queue, cas: upstreamCas };
  }
  const readThrough: BlobStore = upstream ? new ReadThroughBlobStore(limited, upstream.cas, upstream.conn, upstream.queue, upstream.stats, deps.log ?? silentLogger) : limited;
  const cas: BlobStore = metrics ? new MeteredBlobStore(readThrough, metrics) : readThrough;
  const check = new CompletenessCheck(cas, budget.graceSeconds, clock);
  const checkedAc = new CompletenessCheckingActionCache(lmdbAc, check);
  // On the upstream, an incomplete entry is simply not a hit (no grace: it is not ours to drop).
  const upstreamCheck = upstream ? new CompletenessCheck(upstream.cas, 0, clock) : undefined;
  const throughAc: ActionCache = upstream ? new ReadThroughActionCache(checkedAc, upstream.conn, upstream.cas, upstreamCheck!, upstream.queue, upstream.stats, deps.log ?? silentLogger) : checkedAc;
  const ac: ActionCache = metrics ? new MeteredActionCache(throughAc, metrics) : throughAc;
  const checkedAssets = new CompletenessCheckingAssetStore(new LmdbAssetStore(env, clock), check);
  const assets: AssetStore = upstream ? new ReadThroughAssetStore(checkedAssets, upstream.conn, upstream.cas, upstreamCheck!, upstream.queue, upstream.stats, deps.log ?? silentLogger) : checkedAssets;
  const sampler = new StoreUsageSampler(config.dataDir, () => base.usage(), () => lmdbAc.entries());
  return {
    cas,
    ac,
    assets,
    local: base,
    localCas: limited,
    budget,
    ...(upstream ? { upstream } : {}),
    usage: () => sampler.usage(),
    close: async () => {
      await upstream?.queue?.close();
      await sampler.close();
    },
  };
}
