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
import { systemClock, type Clock } from '../util/clock.js';

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
  readonly budget: StorageBudget;
  /** Sizes of the CAS, the action cache and the disk, cheap enough for every scrape. */
  usage(): StoreSizes;
  /** Stop background sampling (before the LMDB environment closes). */
  close(): Promise<void>;
}

export interface StorageDeps {
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
 *   cas    = Metered(SizeLimiting(Verifying(EmptyBlobInjecting(LmdbBlobStore))))
 *   ac     = Metered(CompletenessChecking(LmdbActionCache))
 *   assets = CompletenessChecking(LmdbAssetStore)
 *
 * A remote (upstream) backend or a read-through decorator goes here, between the LMDB base and
 * the decorators the services see.
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
  const cas: BlobStore = metrics ? new MeteredBlobStore(limited, metrics) : limited;
  const check = new CompletenessCheck(cas, budget.graceSeconds, clock);
  const lmdbAc = new LmdbActionCache(env);
  const checkedAc = new CompletenessCheckingActionCache(lmdbAc, check);
  const ac: ActionCache = metrics ? new MeteredActionCache(checkedAc, metrics) : checkedAc;
  const assets = new CompletenessCheckingAssetStore(new LmdbAssetStore(env, clock), check);
  const sampler = new StoreUsageSampler(config.dataDir, () => base.usage(), () => lmdbAc.entries());
  return {
    cas,
    ac,
    assets,
    local: base,
    budget,
    usage: () => sampler.usage(),
    close: () => sampler.close(),
  };
}
