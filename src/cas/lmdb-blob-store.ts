import { randomBytes } from 'node:crypto';
import { mkdir, open, readFile, rename, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { Database } from 'lmdb';
import type { Digest } from '../digest/digest.js';
import { dataSubdir, type LmdbEnv } from '../store/lmdb-env.js';
import type { BlobStore, BlobWriter } from './blob-store.js';

/** What the index knows of a stored blob. Kept small: it is read on every FindMissingBlobs. */
export interface BlobRecord {
  /** Size in bytes. */
  s: number;
  /** 1 when the bytes live in a file under blobs/, 0 when inline in LMDB. */
  f: 0 | 1;
  /** Last access, seconds since the epoch (coarse: refreshed at most every touchIntervalSeconds). */
  t: number;
}

export interface LmdbBlobStoreOptions {
  /** Blobs up to this size live inside LMDB; larger ones are files committed by rename. */
  inlineMaxBytes: number;
  /** fsync file blobs before they become visible (survives power loss, not just a crash). */
  fsync: boolean;
  /** How stale an access time may get before a read refreshes it. */
  touchIntervalSeconds: number;
  /** Chunk size of streamed reads. */
  readChunkBytes: number;
}

export const DEFAULT_BLOB_STORE_OPTIONS: LmdbBlobStoreOptions = {
  inlineMaxBytes: 64 * 1024,
  fsync: true,
  touchIntervalSeconds: 600,
  readChunkBytes: 1024 * 1024,
};

const nowSeconds = (): number => Math.floor(Date.now() / 1000);

/**
 * The base CAS store: an LMDB index (digest → size, location, access time), small blobs inline
 * in LMDB, large blobs as content-addressed files written to tmp/ and renamed into blobs/ once
 * complete. A blob is visible exactly when its index record is committed, so a crash never
 * exposes a partial blob. It trusts its callers: hash checks are VerifyingBlobStore's.
 */
export class LmdbBlobStore implements BlobStore {
  private readonly index: Database<BlobRecord, string>;
  private readonly inline: Database<Buffer, string>;
  private readonly blobDir: string;
  private readonly tmpDir: string;
  private readonly madeDirs = new Set<string>();

  constructor(env: LmdbEnv, dataDir: string, readonly options: LmdbBlobStoreOptions = DEFAULT_BLOB_STORE_OPTIONS) {
    this.index = env.records<BlobRecord>('cas-index');
    this.inline = env.binary('cas-inline');
    this.blobDir = dataSubdir(dataDir, 'blobs');
    this.tmpDir = dataSubdir(dataDir, 'tmp');
  }

  /** Remove leftovers of uploads that a crash interrupted. Call once at start-up. */
  async removeStaleUploads(): Promise<void> {
    await rm(this.tmpDir, { recursive: true, force: true });
    await mkdir(this.tmpDir, { recursive: true });
  }

  record(digest: Digest): BlobRecord | undefined {
    const rec = this.index.get(digest.key);
    return rec && rec.s === digest.sizeBytes ? rec : undefined;
  }

  private touch(digest: Digest, rec: BlobRecord): void {
    const now = nowSeconds();
    if (now - rec.t < this.options.touchIntervalSeconds) return;
    // Fire and forget: access times are advisory (eviction order), never worth a stall.
    this.index.put(digest.key, { ...rec, t: now }).catch(() => undefined);
  }

  async findMissing(digests: readonly Digest[]): Promise<Digest[]> {
    const missing: Digest[] = [];
    for (const d of digests) {
      const rec = this.record(d);
      if (rec) this.touch(d, rec);
      else missing.push(d);
    }
    return missing;
  }

  /** The file holding a blob's bytes, when the blob is stored as a file (larger than inlineMaxBytes). */
  localFile(digest: Digest): string | undefined {
    const rec = this.record(digest);
    return rec && rec.f ? this.filePath(digest) : undefined;
  }

  filePath(digest: Digest): string {
    return join(this.blobDir, digest.fn.name, digest.hash.slice(0, 2), digest.hash);
  }

  async get(digest: Digest): Promise<Buffer | undefined> {
    const rec = this.record(digest);
    if (!rec) return undefined;
    this.touch(digest, rec);
    if (!rec.f) return this.inline.getBinary(digest.key) ?? undefined;
    try {
      return await readFile(this.filePath(digest));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }

  async read(digest: Digest, offset: number, limit: number): Promise<AsyncIterable<Uint8Array> | undefined> {
    const rec = this.record(digest);
    if (!rec) return undefined;
    this.touch(digest, rec);
    const end = limit > 0 ? Math.min(rec.s, offset + limit) : rec.s;
    if (offset >= end) return (async function* () {})();
    if (!rec.f) {
      const data = this.inline.getBinary(digest.key);
      if (!data) return undefined;
      const chunk = this.options.readChunkBytes;
      return (async function* () {
        for (let i = offset; i < end; i += chunk) yield data.subarray(i, Math.min(end, i + chunk));
      })();
    }
    let fh: FileHandle;
    try {
      fh = await open(this.filePath(digest), 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
    // The descriptor is open: the stream survives an eviction that unlinks the file meanwhile.
    // The stream must own the FileHandle itself, not its raw fd: a FileHandle whose fd was
    // closed behind its back fails to close on garbage collection, and that kills the process.
    return fh.createReadStream({ start: offset, end: end - 1, highWaterMark: this.options.readChunkBytes, autoClose: true });
  }

  private async ensureDir(dir: string): Promise<void> {
    if (this.madeDirs.has(dir)) return;
    await mkdir(dir, { recursive: true });
    this.madeDirs.add(dir);
  }

  private async commitRecord(digest: Digest, inlineData: Uint8Array | undefined): Promise<void> {
    const rec: BlobRecord = { s: digest.sizeBytes, f: inlineData ? 0 : 1, t: nowSeconds() };
    // Both puts are issued in the same turn, so lmdb-js commits them in one transaction.
    const writes = [this.index.put(digest.key, rec)];
    if (inlineData) writes.unshift(this.inline.put(digest.key, Buffer.from(inlineData.buffer, inlineData.byteOffset, inlineData.byteLength)));
    await Promise.all(writes);
  }

  async put(digest: Digest, data: Uint8Array): Promise<void> {
    if (this.record(digest)) return;
    if (data.byteLength <= this.options.inlineMaxBytes) return this.commitRecord(digest, data);
    const writer = await this.beginWrite(digest);
    try {
      await writer.write(data);
      await writer.commit();
    } finally {
      await writer.abort();
    }
  }

  async beginWrite(digest: Digest): Promise<BlobWriter> {
    if (digest.sizeBytes <= this.options.inlineMaxBytes) return new InlineWriter(digest, (d, data) => this.commitRecord(d, data));
    const tmpPath = join(this.tmpDir, `${digest.hash}.${randomBytes(8).toString('hex')}`);
    const fh = await open(tmpPath, 'wx', 0o444);
    return new FileWriter(fh, tmpPath, this.options.fsync, async () => {
      const finalPath = this.filePath(digest);
      await this.ensureDir(join(this.blobDir, digest.fn.name, digest.hash.slice(0, 2)));
      await rename(tmpPath, finalPath);
      await this.commitRecord(digest, undefined);
    });
  }
}

class InlineWriter implements BlobWriter {
  private chunks: Uint8Array[] = [];
  written = 0;
  private done = false;
  constructor(
    private readonly digest: Digest,
    private readonly commitFn: (d: Digest, data: Uint8Array) => Promise<void>,
  ) {}
  async write(chunk: Uint8Array): Promise<void> {
    if (this.done) throw new Error('write after commit or abort');
    // Copy: the caller's buffer may be reused once this promise settles.
    this.chunks.push(Buffer.from(chunk));
    this.written += chunk.byteLength;
  }
  async commit(): Promise<void> {
    if (this.done) throw new Error('commit after commit or abort');
    this.done = true;
    const data = Buffer.concat(this.chunks);
    this.chunks = [];
    await this.commitFn(this.digest, data);
  }
  async abort(): Promise<void> {
    this.done = true;
    this.chunks = [];
  }
}

/**
 * How many bytes a FileWriter accepts ahead of the disk. Writing behind lets the file writes
 * (on libuv's thread pool) overlap with receiving and hashing the next chunks, instead of one
 * thread-pool round trip per chunk on the request path.
 */
const WRITE_BEHIND_BYTES = 8 * 1024 * 1024;

/** pwritev all of `bufs` at `position`, however the kernel splits it. */
async function writeAll(fh: FileHandle, bufs: Buffer[], position: number): Promise<void> {
  let total = 0;
  for (const b of bufs) total += b.byteLength;
  let done = 0;
  while (done < total) {
    let skip = done;
    const rest: Buffer[] = [];
    for (const b of bufs) {
      if (skip >= b.byteLength) skip -= b.byteLength;
      else {
        rest.push(skip > 0 ? b.subarray(skip) : b);
        skip = 0;
      }
    }
    const { bytesWritten } = await fh.writev(rest, position + done);
    done += bytesWritten;
  }
}

class FileWriter implements BlobWriter {
  written = 0;
  private state: 'open' | 'committed' | 'aborted' = 'open';
  /** Chunks accepted and not yet handed to the kernel. */
  private queue: Buffer[] = [];
  /** Bytes accepted and not yet written (queued or in flight). */
  private pendingBytes = 0;
  /** File offset of the next write. */
  private position = 0;
  private inFlight: Promise<void> | undefined;
  private failure: unknown;
  constructor(
    private readonly fh: FileHandle,
    private readonly tmpPath: string,
    private readonly fsync: boolean,
    private readonly publish: () => Promise<void>,
  ) {}
  /** Hand every queued chunk to one writev, unless one is running (it starts the next). */
  private pump(): void {
    if (this.inFlight || this.queue.length === 0 || this.failure !== undefined) return;
    const bufs = this.queue;
    this.queue = [];
    let bytes = 0;
    for (const b of bufs) bytes += b.byteLength;
    const at = this.position;
    this.position += bytes;
    this.inFlight = writeAll(this.fh, bufs, at)
      .then(
        () => void (this.pendingBytes -= bytes),
        (err: unknown) => void (this.failure ??= err),
      )
      .finally(() => {
        this.inFlight = undefined;
        if (this.state === 'open' || this.state === 'committed') this.pump();
      });
  }
  /** Wait until at most `limit` bytes are pending (0: all on disk); throws a write's failure. */
  private async settle(limit: number): Promise<void> {
    while (this.inFlight && this.pendingBytes > limit) await this.inFlight;
    if (this.failure !== undefined) throw this.failure;
  }
  async write(chunk: Uint8Array): Promise<void> {
    if (this.state !== 'open') throw new Error(`write after ${this.state}`);
    if (this.failure !== undefined) throw this.failure;
    // No copy: BlobWriter's contract lets us keep the chunk until it is written.
    this.queue.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
    this.pendingBytes += chunk.byteLength;
    this.written += chunk.byteLength;
    this.pump();
    await this.settle(WRITE_BEHIND_BYTES);
  }
  async commit(): Promise<void> {
    if (this.state !== 'open') throw new Error(`commit after ${this.state}`);
    this.state = 'committed';
    try {
      await this.settle(0);
    } catch (err) {
      await this.fh.close().catch(() => undefined);
      await rm(this.tmpPath, { force: true });
      throw err;
    }
    if (this.fsync) await this.fh.sync();
    await this.fh.close();
    try {
      await this.publish();
    } catch (err) {
      await rm(this.tmpPath, { force: true });
      throw err;
    }
  }
  async abort(): Promise<void> {
    if (this.state !== 'open') return;
    this.state = 'aborted';
    this.queue = [];
    while (this.inFlight) await this.inFlight;
    await this.fh.close().catch(() => undefined);
    await rm(this.tmpPath, { force: true });
  }
}
