import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Config } from '../config/config.js';
import { openDataDir } from '../daemon/data-dir-format.js';
import { DataDirLock } from '../daemon/data-dir-lock.js';
import { DiskSpace } from '../store/disk-space.js';
import type { LmdbEnv } from '../store/lmdb-env.js';
import { createStorage, type Storage } from '../storage/create-storage.js';
import { silentLogger } from '../util/logger.js';
import type { GcProgress, GcRequest } from './garbage-collector.js';
import { resolveStorageBudget } from './storage-budget.js';
import { InUseDigests } from './in-use-digests.js';
import { FailedActionKeeper } from '../history/failed-actions.js';
import { HistoryStore } from '../history/history-store.js';
import { StorageGc, type GcRunSummary } from './storage-gc.js';
import { UserError } from '../util/user-error.js';

export class NoStoreError extends UserError {
  constructor(readonly dataDir: string) {
    super(`there is no reexec store in ${dataDir} (no ${join(dataDir, 'lmdb')})`, 'Pass the data dir of a reexec store with --data-dir, or the config of one with --config.');
    this.name = 'NoStoreError';
  }
}

/**
 * Collect garbage in a data dir no daemon is using: takes the data dir's lock (so a daemon
 * cannot start meanwhile; DataDirLockedError when one runs), opens the store, collects, closes.
 * Nothing runs, so nothing is in use but what the grace period protects. On a full file
 * system the disk reserve is released first, so that the deletions can commit, and re-created
 * after if there is room.
 * The blobs of the newest failed actions of the history (history.keep-failed) are kept.
 */
export async function collectGarbageOffline(
  config: Pick<Config, 'dataDir' | 'storage' | 'source'> & Partial<Pick<Config, 'history'>>,
  request: GcRequest,
  progress?: (p: GcProgress) => void | Promise<void>,
): Promise<GcRunSummary> {
  const { dataDir } = config;
  if (!existsSync(join(dataDir, 'lmdb'))) throw new NoStoreError(dataDir);
  const lock = DataDirLock.acquire(dataDir, 'gc');
  let env: LmdbEnv | undefined;
  let storage: Storage | undefined;
  try {
    const budget = await resolveStorageBudget(config);
    const space = new DiskSpace(dataDir, { reserveBytes: budget.reserveBytes });
    env = await openDataDir(dataDir, silentLogger, undefined, { space });
    storage = await createStorage(config, { env, budget, space });
    // The newest failed actions of the history keep their blobs, as with a daemon (history.keep-failed).
    const inUse = new InUseDigests();
    const keep = config.history?.keepFailed ?? 0;
    if (keep > 0) await new FailedActionKeeper(storage.cas, inUse, keep).start(new HistoryStore(env));
    const gc = new StorageGc({ store: storage.local, budget, cacheDir: join(dataDir, 'cache'), inUse, log: silentLogger, space });
    return await gc.collect(request, progress);
  } finally {
    await storage?.close();
    await env?.close();
    lock.release();
  }
}
