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
 * The one storage interface of the CAS. Every concern (empty blob, verification, metrics,
 * access tracking) is a decorator that wraps a base store and overrides only what it changes.
 */
export interface BlobStore {
  /** The digests of `digests` that are not stored (with their exact size). */
  findMissing(digests: readonly Digest[]): Promise<Digest[]>;
  /** A whole blob, or undefined when absent. Callers bound the size they ask for. */
  get(digest: Digest): Promise<Buffer | undefined>;
  /** Part of a blob as a stream of chunks; undefined when absent. `limit` 0 means to the end. */
  read(digest: Digest, offset: number, limit: number): Promise<AsyncIterable<Uint8Array> | undefined>;
  /** Store a whole blob. */
  put(digest: Digest, data: Uint8Array): Promise<void>;
  /** Start a streamed upload of a blob whose digest (and so size) is known. */
  beginWrite(digest: Digest): Promise<BlobWriter>;
}

/** A decorator base: forwards everything to `base`. */
export abstract class ForwardingBlobStore implements BlobStore {
  constructor(protected readonly base: BlobStore) {}
  findMissing(digests: readonly Digest[]): Promise<Digest[]> {
    return this.base.findMissing(digests);
  }
  get(digest: Digest): Promise<Buffer | undefined> {
    return this.base.get(digest);
  }
  read(digest: Digest, offset: number, limit: number): Promise<AsyncIterable<Uint8Array> | undefined> {
    return this.base.read(digest, offset, limit);
  }
  put(digest: Digest, data: Uint8Array): Promise<void> {
    return this.base.put(digest, data);
  }
  beginWrite(digest: Digest): Promise<BlobWriter> {
    return this.base.beginWrite(digest);
  }
}

export async function has(store: BlobStore, digest: Digest): Promise<boolean> {
  return (await store.findMissing([digest])).length === 0;
}
