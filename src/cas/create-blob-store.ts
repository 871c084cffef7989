import type { LmdbEnv } from '../store/lmdb-env.js';
import type { BlobStore } from './blob-store.js';
import { EmptyBlobInjectingStore } from './empty-blob-injecting-store.js';
import { LmdbBlobStore, type LmdbBlobStoreOptions, DEFAULT_BLOB_STORE_OPTIONS } from './lmdb-blob-store.js';
import { VerifyingBlobStore } from './verifying-store.js';

/** The CAS as the services see it: verified writes over an always-present empty blob over LMDB. */
export function createBlobStore(env: LmdbEnv, dataDir: string, options: Partial<LmdbBlobStoreOptions> = {}): { store: BlobStore; base: LmdbBlobStore } {
  const base = new LmdbBlobStore(env, dataDir, { ...DEFAULT_BLOB_STORE_OPTIONS, ...options });
  return { store: new VerifyingBlobStore(new EmptyBlobInjectingStore(base)), base };
}
