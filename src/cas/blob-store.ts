import type { Digest } from '../digest/digest.js';

/**
 * An upload in progress. Bytes become visible only through commit(), which checks what the
 * decorators check (hash, size) and makes the blob appear atomically.
 */
export interface BlobWriter {
  /** Bytes accepted so far: what QueryWriteStatus reports for a resumable upload. */
  readonly written: number;
  /**
   * Accept the next bytes. As with Node's streams, the writer may keep a reference to `chunk`
   * until commit() or abort() settles (file blobs are written behind): never modify it after.
   */
  write(chunk: Uint8Array): Promise<void>;
  commit(): Promise<void>;
  /** Throw the partial data away. Safe to call more than once, or after commit. */
  abort(): Promise<void>;
}

/**
 * What every BlobStore call may carry: the caller's cancellation (a gRPC call that ended, a
 * cancelled action). Local LMDB work is short and ignores it; a network backend aborts on it.
 */
export interface StoreCallOptions {
  signal?: AbortSignal;
}

/**
 * The one storage interface of the CAS. Every concern (empty blob, verification, metrics,
 * access tracking) is a decorator that wraps a base store and overrides only what it changes.
 */
export interface BlobStore {
  /** The digests of `digests` that are not stored (with their exact size). */
  findMissing(digests: readonly Digest[], options?: StoreCallOptions): Promise<Digest[]>;
  /** A whole blob, or undefined when absent. Callers bound the size they ask for. */
  get(digest: Digest, options?: StoreCallOptions): Promise<Buffer | undefined>;
  /** Part of a blob as a stream of chunks; undefined when absent. `limit` 0 means to the end. */
  read(digest: Digest, offset: number, limit: number, options?: StoreCallOptions): Promise<AsyncIterable<Uint8Array> | undefined>;
  /** Store a whole blob. */
  put(digest: Digest, data: Uint8Array, options?: StoreCallOptions): Promise<void>;
  /** Start a streamed upload of a blob whose digest (and so size) is known. */
  beginWrite(digest: Digest, options?: StoreCallOptions): Promise<BlobWriter>;
}

/** A decorator base: forwards everything to `base`. */
export abstract class ForwardingBlobStore implements BlobStore {
  constructor(protected readonly base: BlobStore) {}
  findMissing(digests: readonly Digest[], options?: StoreCallOptions): Promise<Digest[]> {
    return this.base.findMissing(digests, options);
  }
  get(digest: Digest, options?: StoreCallOptions): Promise<Buffer | undefined> {
    return this.base.get(digest, options);
  }
  read(digest: Digest, offset: number, limit: number, options?: StoreCallOptions): Promise<AsyncIterable<Uint8Array> | undefined> {
    return this.base.read(digest, offset, limit, options);
  }
  put(digest: Digest, data: Uint8Array, options?: StoreCallOptions): Promise<void> {
    return this.base.put(digest, data, options);
  }
  beginWrite(digest: Digest, options?: StoreCallOptions): Promise<BlobWriter> {
    return this.base.beginWrite(digest, options);
  }
}

export async function has(store: BlobStore, digest: Digest, options?: StoreCallOptions): Promise<boolean> {
  return (await store.findMissing([digest], options)).length === 0;
}

/** Digests per FindMissing call when a caller checks a whole tree: bounds one LMDB read (or one request). */
export const FIND_MISSING_CHUNK = 10_000;

/** FindMissing over any number of digests, in chunks of FIND_MISSING_CHUNK; `stopAtFirst`: return once one chunk has a missing blob. */
export async function findMissingInChunks(store: BlobStore, digests: readonly Digest[], options: StoreCallOptions & { stopAtFirst?: boolean } = {}): Promise<Digest[]> {
  const missing: Digest[] = [];
  for (let i = 0; i < digests.length; i += FIND_MISSING_CHUNK) {
    missing.push(...(await store.findMissing(digests.slice(i, i + FIND_MISSING_CHUNK), options)));
    if (options.stopAtFirst && missing.length > 0) break;
  }
  return missing;
}
