import { randomBytes } from 'node:crypto';
import { lstat, mkdir, open, readdir, readFile, rename, rm, unlink, type FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Database } from 'lmdb';
import type { Digest } from '../digest/digest.js';
import { diskError } from '../store/disk-space.js';
import { dataSubdir, type LmdbEnv } from '../store/lmdb-env.js';
import { pausePoint } from '../util/test-hooks.js';
import type { BlobStore, BlobWriter } from './blob-store.js';
import type { BlobRecord, IndexEntry, LocalBlobStore, StoreUsage } from './local-blob-store.js';
import { systemClock, type Clock } from '../util/clock.js';

export type { BlobRecord, IndexEntry, StoreUsage };

/** A record waiting for its group commit (LmdbBlobStore.commitRecord). */
interface QueuedRecord {
  digest: Digest;
  /** The bytes of an inline blob; undefined for a file blob. */
  data: Buffer | undefined;
  /** Access time to record. */
  t: number;
  resolve: () => void;
  reject: (err: unknown) => void;
}

/** fsync a directory: makes the names created or renamed in it durable. */
async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** The key of the usage counters in the cas-meta database. */
const USAGE_KEY = 'usage';

export interface LmdbBlobStoreOptions {
  /** Blobs up to this size live inside LMDB; larger ones are files committed by rename. */
  inlineMaxBytes: number;
  /** fsync file blobs before they become visible (survives power loss, not just a crash). */
  fsync: boolean;
  /** How stale an access time may get before a read refreshes it. */
  touchIntervalSeconds: number;
  /** Chunk size of streamed reads. */
  readChunkBytes: number;
  /** Where access times come from (default: the system clock). */
  clock?: Clock;
}

export const DEFAULT_BLOB_STORE_OPTIONS: LmdbBlobStoreOptions = {
  inlineMaxBytes: 64 * 1024,
  fsync: true,
  touchIntervalSeconds: 600,
  readChunkBytes: 1024 * 1024,
};


/**
 * The base CAS store: an LMDB index (digest → size, location, access time), small blobs inline
 * in LMDB, large blobs as content-addressed files written to tmp/ and renamed into blobs/ once
 * complete. A blob is visible exactly when its index record is committed, so a crash never
 * exposes a partial blob. It trusts its callers: hash checks are VerifyingBlobStore's.
 */
export class LmdbBlobStore implements BlobStore, LocalBlobStore {
  private readonly index: Database<BlobRecord, string>;
  private readonly inline: Database<Buffer, string>;
  private readonly blobDir: string;
  private readonly tmpDir: string;
  private readonly madeDirs = new Set<string>();
  /** Blob count and bytes, changed in the same transaction as the index (see commitRecord, evict). */
  private readonly meta: Database<StoreUsage, string>;
  /**
   * Keys whose blob file is being published or deleted. Publishing renames the file into place
   * before the record is committed, and eviction deletes the file after the record is gone:
   * without this, one could interleave with the other and leave a record without its file.
   */
  private readonly fileLocks = new Map<string, Promise<void>>();
  /** Records waiting for the next group commit (commitRecord). */
  private queuedRecords: QueuedRecord[] = [];
  private committing = false;
  /** The usage counters as last committed (see usage()); undefined: read them again. */
  private committedUsage: StoreUsage | undefined;

  constructor(
    private readonly env: LmdbEnv,
    private readonly dataDir: string,
    readonly options: LmdbBlobStoreOptions = DEFAULT_BLOB_STORE_OPTIONS,
  ) {
    this.index = env.records<BlobRecord>('cas-index');
    this.inline = env.binary('cas-inline');
    this.meta = env.records<StoreUsage>('cas-meta');
    this.blobDir = dataSubdir(dataDir, 'blobs');
    this.tmpDir = dataSubdir(dataDir, 'tmp');
    // A store written before the counters existed: count once, in one transaction.
    if (!this.meta.get(USAGE_KEY)) {
      this.index.transactionSync(() => {
        const usage: StoreUsage = { bytes: 0, count: 0 };
        for (const { value } of this.index.getRange({})) {
          usage.bytes += value.s;
          usage.count++;
        }
        this.meta.putSync(USAGE_KEY, usage);
      });
    }
  }

  private nowSeconds(): number {
    return Math.floor((this.options.clock ?? systemClock).now() / 1000);
  }

  /** Blob bytes and count, as last committed. */
  usage(): StoreUsage {
    // This process is the store's only writer: the counters change only through commitBatch and
    // evict, which keep this copy current (the upload path reads it for every blob).
    return (this.committedUsage ??= this.storedUsage());
  }

  /** The counters as the database holds them (in a write transaction: as it will commit them). */
  private storedUsage(): StoreUsage {
    return this.meta.get(USAGE_KEY) ?? { bytes: 0, count: 0 };
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
    const now = this.nowSeconds();
    if (now - rec.t < this.options.touchIntervalSeconds) return;
    // Fire and forget: access times are advisory (eviction order), never worth a stall.
    // Conditional: a touch that loses a race with an eviction must not bring the record back.
    // Queued now, it commits before any eviction queued later, which then sees the new time.
    // Not on a nearly full disk: there, only deletions write.
    const key = digest.key;
    if (this.env.space?.critical) return;
    this.env
      .write(`refreshing the access time of ${key}`, () =>
        this.index.transaction(() => {
          const cur = this.index.get(key);
          if (cur && cur.t < now) this.index.put(key, { ...cur, t: now });
        }),
      )
      .catch(() => undefined);
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

  /** Create a blob directory once; with fsync on, make its new entry in the parent durable too. */
  private async ensureDir(dir: string): Promise<void> {
    if (this.madeDirs.has(dir)) return;
    const created = await mkdir(dir, { recursive: true });
    // A directory made just now is a new name in its parent: durable only once the parent is synced.
    if (created !== undefined && this.options.fsync) {
      for (let d = dir; d.length >= created.length && d !== this.blobDir; d = dirname(d)) await syncDir(dirname(d));
    }
    this.madeDirs.add(dir);
  }

  /**
   * Commit a blob's record (and its bytes, when inline) with the usage counters. Records are
   * group-committed: every record queued while a commit is running, or in the same turn of the
   * event loop (all the blobs of one BatchUpdateBlobs), goes into the next single LMDB
   * transaction, one durable commit for the lot instead of one each. Each caller's promise
   * settles when the transaction holding its record has committed (or failed).
   */
  private commitRecord(digest: Digest, inlineData: Uint8Array | undefined): Promise<void> {
    const data = inlineData && Buffer.from(inlineData.buffer, inlineData.byteOffset, inlineData.byteLength);
    return new Promise<void>((resolve, reject) => {
      this.queuedRecords.push({ digest, data, t: this.nowSeconds(), resolve, reject });
      if (!this.committing && this.queuedRecords.length === 1) setImmediate(() => void this.commitQueued());
    });
  }

  /** Commit queued records in batches until none is left; one runs at a time. */
  private async commitQueued(): Promise<void> {
    if (this.committing) return;
    this.committing = true;
    try {
      while (this.queuedRecords.length > 0) {
        const batch = this.queuedRecords;
        this.queuedRecords = [];
        try {
          await this.commitBatch(batch);
          for (const r of batch) r.resolve();
        } catch (err) {
          for (const r of batch) r.reject(err);
        }
      }
    } finally {
      this.committing = false;
    }
  }

  private async commitBatch(batch: readonly QueuedRecord[]): Promise<void> {
    const first = batch[0]!.digest;
    const what = batch.length === 1 ? `storing blob ${first}` : `storing ${batch.length} blobs (${first} and ${batch.length - 1} more)`;
    // One transaction: the blobs, their records and the usage counters change together or not at all.
    let usage: StoreUsage | undefined;
    this.committedUsage = undefined;
    await this.env.write(what, () =>
      this.index.transaction(() => {
        // Checked again just before the commit: another process may have filled the disk since.
        this.env.space?.checkRoom(what);
        let { bytes, count } = this.storedUsage();
        for (const { digest, data, t } of batch) {
          const key = digest.key;
          const rec: BlobRecord = { s: digest.sizeBytes, f: data ? 0 : 1, t };
          const old = this.index.get(key);
          if (data) this.inline.put(key, data);
          else if (old && !old.f) this.inline.remove(key);
          this.index.put(key, rec);
          bytes += rec.s - (old ? old.s : 0);
          if (!old) count++;
        }
        usage = { bytes, count };
        this.meta.put(USAGE_KEY, usage);
      }),
    );
    this.committedUsage = usage;
  }

  /** Run `fn` holding the file lock of `key`, after whoever holds it now. */
  private async withFileLock<T>(key: string, fn: () => Promise<T>): Promise<T> {
    for (let held = this.fileLocks.get(key); held; held = this.fileLocks.get(key)) await held;
    let release!: () => void;
    this.fileLocks.set(key, new Promise<void>((r) => (release = r)));
    try {
      return await fn();
    } finally {
      this.fileLocks.delete(key);
      release();
    }
  }

  async put(digest: Digest, data: Uint8Array): Promise<void> {
    const existing = this.record(digest);
    if (existing) return this.touch(digest, existing);
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
    const what = `storing blob ${digest}`;
    const translate = (err: unknown): unknown => diskError(err, this.dataDir, what);
    const fh = await open(tmpPath, 'wx', 0o444).catch((err: unknown) => {
      throw translate(err);
    });
    return new FileWriter(fh, tmpPath, this.options.fsync, translate, (sync) =>
      this.withFileLock(digest.key, async () => {
        // Stored meanwhile by another upload: keep its file (never replace a file a record names).
        if (this.record(digest)) return false;
        const dir = join(this.blobDir, digest.fn.name, digest.hash.slice(0, 2));
        const finalPath = this.filePath(digest);
        await this.ensureDir(dir);
        // Renamed first, synced after: the file's sync then carries the rename in the same
        // journal commit on ext4 (one disk flush, not two). Until its record commits, the name
        // is an orphan no reader looks up (removeOrphanFiles skips locked keys).
        await rename(tmpPath, finalPath);
        try {
          // The file's bytes and its new name, flushed at the same time; both before the record.
          await Promise.all([sync(), this.options.fsync ? syncDir(dir) : undefined]);
          await this.commitRecord(digest, undefined);
        } catch (err) {
          await rm(finalPath, { force: true });
          throw err;
        }
        return true;
      }),
    );
  }

  /**
   * Up to `limit` index entries in key order, starting after the key `after`. Reads without a
   * long-lived snapshot, so a scan in steps never holds LMDB's free pages.
   */
  scan(after: string | undefined, limit: number): IndexEntry[] {
    const out: IndexEntry[] = [];
    for (const { key, value } of this.index.getRange({ start: after, limit: limit + 1, snapshot: false })) {
      if (key === after) continue;
      out.push({ key, s: value.s, f: value.f, t: value.t });
      if (out.length === limit) break;
    }
    return out;
  }

  private keyPath(key: string): string {
    const i = key.indexOf(':');
    const hash = key.slice(i + 1);
    return join(this.blobDir, key.slice(0, i), hash.slice(0, 2), hash);
  }

  /**
   * Delete blobs the garbage collector chose, each only if it is still as the collector saw it
   * (same size and access time) and `stillEvictable` agrees when the transaction runs. The
   * records and counters go in one transaction; the files of the deleted blobs after it has
   * committed, so a crash in between leaves orphan files (removed by removeOrphanFiles), never
   * a record without its bytes. A reader that opened a file before keeps reading it.
   */
  async evict(candidates: readonly IndexEntry[], stillEvictable: (entry: IndexEntry) => boolean): Promise<StoreUsage> {
    const locked: Array<() => void> = [];
    const mine: IndexEntry[] = [];
    for (const c of candidates) {
      // A file being published (or deleted by someone else) right now is in use.
      if (c.f && this.fileLocks.has(c.key)) continue;
      if (c.f) this.fileLocks.set(c.key, new Promise<void>((r) => locked.push(() => (this.fileLocks.delete(c.key), r()))));
      mine.push(c);
    }
    const gone: IndexEntry[] = [];
    try {
      await this.env.write(
        'evicting blobs',
        () =>
          this.index.transaction(() => {
            let bytes = 0;
            for (const c of mine) {
              const cur = this.index.get(c.key);
              if (!cur || cur.s !== c.s || cur.t !== c.t || cur.f !== c.f || !stillEvictable(c)) continue;
              this.index.remove(c.key);
              if (!cur.f) this.inline.remove(c.key);
              bytes += cur.s;
              gone.push(c);
            }
            if (gone.length > 0) {
              const u = this.storedUsage();
              this.meta.put(USAGE_KEY, { bytes: u.bytes - bytes, count: u.count - gone.length });
            }
          }),
        { deletion: true },
      ).finally(() => (this.committedUsage = undefined));
      // Records gone, files not yet: where a crash leaves orphan files (crash tests stop here).
      await pausePoint('eviction');
      const files = gone.filter((c) => c.f);
      for (let i = 0; i < files.length; i += 32) {
        await Promise.all(files.slice(i, i + 32).map((c) => rm(this.keyPath(c.key), { force: true })));
      }
    } finally {
      for (const release of locked) release();
    }
    return { bytes: gone.reduce((n, c) => n + c.s, 0), count: gone.length };
  }

  /**
   * Delete files under blobs/ that no record refers to: what a crash between writing a file and
   * committing its record (or between deleting a record and its file) leaves behind.
   */
  async removeOrphanFiles(): Promise<{ files: number; bytes: number }> {
    const found = { files: 0, bytes: 0 };
    const list = (dir: string): Promise<string[]> => readdir(dir).catch(() => [] as string[]);
    for (const fn of await list(this.blobDir)) {
      for (const prefix of await list(join(this.blobDir, fn))) {
        for (const hash of await list(join(this.blobDir, fn, prefix))) {
          const key = `${fn}:${hash}`;
          if (this.fileLocks.has(key) || this.index.get(key)?.f) continue;
          await this.withFileLock(key, async () => {
            if (this.index.get(key)?.f) return;
            const path = this.keyPath(key);
            const st = await lstat(path).catch(() => undefined);
            if (!st) return;
            await unlink(path).catch(() => undefined);
            found.files++;
            found.bytes += st.size;
          });
        }
      }
    }
    return found;
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

/**
 * With fsync on, a FileWriter starts an fdatasync in the background each time this many bytes
 * have been written since the last one: the disk takes a large blob while it streams in, and the
 * sync at commit has only the tail left to flush (for 256 MiB, ~150 ms less at commit here).
 */
const FLUSH_BEHIND_BYTES = 32 * 1024 * 1024;

class FileWriter implements BlobWriter {
  written = 0;
  private state: 'open' | 'committed' | 'aborted' = 'open';
  /** Chunks accepted and not yet handed to the kernel. */
  private queue: Buffer[] = [];
  /** Bytes accepted and not yet written (queued or in flight). */
  private pendingBytes = 0;
  /** File offset of the next write. */
  private position = 0;
  /** File offset up to which a background sync was started. */
  private syncedTo = 0;
  private inFlight: Promise<void> | undefined;
  /** A background fdatasync (flush-behind), while one runs. */
  private syncing: Promise<void> | undefined;
  private failure: unknown;
  constructor(
    private readonly fh: FileHandle,
    private readonly tmpPath: string,
    private readonly fsync: boolean,
    /** A disk error as RESOURCE_EXHAUSTED naming the data dir (diskError). */
    private readonly translate: (err: unknown) => unknown,
    /**
     * Make the complete file the blob: `sync` flushes the file to disk, and must have
     * completed before the blob's record commits. False when the blob was already stored
     * (the file is then not used).
     */
    private readonly publish: (sync: () => Promise<void>) => Promise<boolean>,
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
        () => {
          this.pendingBytes -= bytes;
          this.flushBehind(at + bytes);
        },
        (err: unknown) => void (this.failure ??= this.translate(err)),
      )
      .finally(() => {
        this.inFlight = undefined;
        if (this.state === 'open' || this.state === 'committed') this.pump();
      });
  }
  /** Start a background fdatasync when FLUSH_BEHIND_BYTES more are written and none runs. */
  private flushBehind(writtenTo: number): void {
    if (!this.fsync || this.syncing || this.state === 'aborted' || writtenTo - this.syncedTo < FLUSH_BEHIND_BYTES) return;
    this.syncedTo = writtenTo;
    this.syncing = this.fh
      .datasync()
      .catch((err: unknown) => void (this.failure ??= this.translate(err)))
      .finally(() => (this.syncing = undefined));
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
    let published = false;
    try {
      await this.settle(0);
      while (this.syncing) await this.syncing;
      if (this.failure !== undefined) throw this.failure;
      published = await this.publish(async () => {
        if (this.fsync) await this.fh.sync();
      });
    } catch (err) {
      throw this.translate(err);
    } finally {
      await this.fh.close().catch(() => undefined);
      if (!published) await rm(this.tmpPath, { force: true });
    }
  }
  async abort(): Promise<void> {
    if (this.state !== 'open') return;
    this.state = 'aborted';
    this.queue = [];
    while (this.inFlight || this.syncing) await (this.inFlight ?? this.syncing);
    await this.fh.close().catch(() => undefined);
    await rm(this.tmpPath, { force: true });
  }
}
