import type { Database } from 'lmdb';
import type { ActionCache } from '../ac/action-cache.js';
import { actionResultReferences } from '../ac/completeness-checking-action-cache.js';
import type { AssetBinding, AssetKind, Qualifier } from '../asset/asset-store.js';
import type { BlobStore } from '../cas/blob-store.js';
import { directoryReferences, treeFileDigests, walkDirectories } from '../cas/directory-walker.js';
import { digestFunctionFromName } from '../digest/digest-function.js';
import { Digest } from '../digest/digest.js';
import { InstanceName } from '../digest/instance-name.js';
import { re } from '../proto.js';
import type { LmdbEnv } from '../store/lmdb-env.js';
import type { Logger } from '../util/logger.js';
import type { UpstreamCas } from './upstream-cas.js';
import { UpstreamError, type UpstreamConnection } from './upstream-connection.js';
import type { UpstreamStats } from './upstream-stats.js';
import * as grpc from '@grpc/grpc-js';

/**
 * Uploads to the upstream, written behind: what the local store acknowledged (blobs, action
 * results, Remote Asset pushes) is queued here and sent when the upstream can take it.
 *
 * The queue is an LMDB database in the data dir ("upstream-queue"): it survives restarts and
 * crashes (an item is removed only once the upstream has it). It is bounded (upstream.queue
 * .max-items): past the bound, new items are dropped and counted. Items are ordered by when
 * they are due; one that fails is retried later with exponential backoff (upstream.retry), and
 * given up after MAX_TRIES. While the upstream is down nothing is sent; the connection's
 * onUp resumes the queue.
 *
 * Blobs first: before an action result or an asset is pushed, every blob it refers to that
 * the upstream lacks is uploaded (FindMissingBlobs, then batches, ByteStream for large ones),
 * so the upstream never holds an entry whose blobs it lacks because of us.
 */

type ItemKind = 'blob' | 'ac' | 'asset';

interface QueueRecord {
  /** Identity: "b:<fn>:<hash>:<size>", "c:<instance>\0<fn>:<hash>:<size>", "s:<kind>\0<instance>\0<uris>\0<qualifiers>". */
  id: string;
  k: ItemKind;
  tries: number;
  /** Queued at (ms since the epoch). */
  at: number;
  /** Assets: what to push. */
  asset?: { instance: string; kind: AssetKind; uris: string[]; qualifiers: Qualifier[]; digest: string; blobs: string[]; directories: string[]; expireAt?: number };
}

export interface QueueStatus {
  /** Pending items, by kind. */
  blobs: number;
  actionResults: number;
  assets: number;
  /** Pending blob bytes (blob items only). */
  blobBytes: number;
  /** Since the daemon started: items uploaded, dropped (queue full), given up (failed MAX_TRIES times or lost locally). */
  done: number;
  dropped: number;
  failed: number;
  /** The oldest pending item's queueing time (ms), if any. */
  oldestAt?: number;
  lastError?: string;
}

/** An item failing this many times is given up (logged, counted in `failed`). */
export const MAX_TRIES = 20;
/** Items taken from the queue per round. */
const ROUND = 256;

export interface WriteBehindDeps {
  env: LmdbEnv;
  conn: UpstreamConnection;
  upstream: UpstreamCas;
  /** The local CAS (below the read-through decorator: reading it never asks the upstream). */
  local: BlobStore;
  /** The local action cache, undecorated: what was stored, complete or not. */
  localAc: ActionCache;
  stats: UpstreamStats;
  log: Logger;
  maxItems: number;
  concurrency: number;
  retry: { initialSeconds: number; maxSeconds: number };
  now?: () => number;
}

export class WriteBehindQueue {
  private readonly db: Database<QueueRecord, string>;
  /** Queued identities → their key in the database. */
  private readonly keys = new Map<string, string>();
  private readonly counts: Record<ItemKind, number> = { blob: 0, ac: 0, asset: 0 };
  private blobBytes = 0;
  private done = 0;
  private dropped = 0;
  private failed = 0;
  private lastError?: string;
  private seq = 0;
  private running: Promise<void> | undefined;
  private again = false;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private readonly now: () => number;
  private readonly idle: Array<() => void> = [];
  private warnedFull = false;

  constructor(private readonly deps: WriteBehindDeps) {
    this.db = deps.env.records<QueueRecord>('upstream-queue');
    this.now = deps.now ?? Date.now;
    for (const { key, value } of this.db.getRange({})) this.remember(value.id, key, value);
    if (this.keys.size) deps.log.info(`upstream queue: ${this.keys.size} uploads left from the last run, resuming`);
    deps.conn.onUp(() => this.kick());
    this.kick();
  }

  /** What is pending, for status and metrics. */
  status(): QueueStatus {
    let oldest: number | undefined;
    for (const { value } of this.db.getRange({ limit: 1 })) oldest = value.at;
    return {
      blobs: this.counts.blob,
      actionResults: this.counts.ac,
      assets: this.counts.asset,
      blobBytes: this.blobBytes,
      done: this.done,
      dropped: this.dropped,
      failed: this.failed,
      ...(oldest ? { oldestAt: oldest } : {}),
      ...(this.lastError ? { lastError: this.lastError } : {}),
    };
  }

  get length(): number {
    return this.keys.size;
  }

  addBlob(digest: Digest): void {
    if (digest.sizeBytes === 0 || !this.deps.upstream.supports(digest)) return;
    this.add({ id: `b:${digest.fn.name}:${digest.hash}:${digest.sizeBytes}`, k: 'blob', tries: 0, at: this.now() });
  }

  addActionResult(instance: InstanceName, action: Digest): void {
    if (!this.deps.upstream.supports(action)) return;
    this.add({ id: `c:${instance.value}\u0000${action.fn.name}:${action.hash}:${action.sizeBytes}`, k: 'ac', tries: 0, at: this.now() });
  }

  addAsset(instance: InstanceName, uris: readonly string[], qualifiers: readonly Qualifier[], binding: AssetBinding): void {
    if (!this.deps.upstream.supports(binding.digest)) return;
    const q = [...qualifiers].sort((a, b) => (a.name < b.name ? -1 : 1));
    this.add({
      id: `s:${binding.kind}\u0000${instance.value}\u0000${uris.join('\u0001')}\u0000${q.map((x) => `${x.name}=${x.value}`).join('\u0001')}`,
      k: 'asset',
      tries: 0,
      at: this.now(),
      asset: {
        instance: instance.value,
        kind: binding.kind,
        uris: [...uris],
        qualifiers: q,
        digest: encode(binding.digest),
        blobs: binding.referencesBlobs.map(encode),
        directories: binding.referencesDirectories.map(encode),
        ...(binding.expireAt !== undefined ? { expireAt: binding.expireAt } : {}),
      },
    });
  }

  /** Resolves once nothing is pending or being sent (tests, shutdown). */
  whenIdle(): Promise<void> {
    if (this.keys.size === 0 && !this.running) return Promise.resolve();
    return new Promise((r) => this.idle.push(r));
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    await this.running;
  }

  private add(record: QueueRecord): void {
    if (this.closed || this.keys.has(record.id)) return;
    if (this.keys.size >= this.deps.maxItems) {
      this.dropped++;
      if (!this.warnedFull) {
        this.warnedFull = true;
        this.deps.log.warn(`upstream queue full (${this.deps.maxItems} items, upstream.queue.max-items): new uploads to ${this.deps.conn.url} are dropped until it drains`);
      }
      return;
    }
    this.warnedFull = false;
    const key = this.keyFor(this.now(), record.id);
    this.remember(record.id, key, record);
    // Sent once committed (a round reads the database).
    this.deps.env.write('queueing an upload to the upstream', () => this.db.put(key, record)).then(
      () => this.kick(),
      (err: Error) => {
        this.forget(record.id, record);
        this.dropped++;
        this.deps.log.warn(`cannot queue an upload to the upstream: ${err.message}`);
      },
    );
  }

  /** Keys sort by due time, then arrival. */
  private keyFor(due: number, id: string): string {
    return `${String(Math.floor(due)).padStart(15, '0')}:${String(this.seq++).padStart(9, '0')}:${id.slice(0, 2)}`;
  }

  private remember(id: string, key: string, r: QueueRecord): void {
    if (this.keys.has(id)) return;
    this.keys.set(id, key);
    this.counts[r.k]++;
    if (r.k === 'blob') this.blobBytes += Number(id.slice(id.lastIndexOf(':') + 1));
  }

  private forget(id: string, r: QueueRecord): void {
    if (!this.keys.delete(id)) return;
    this.counts[r.k]--;
    if (r.k === 'blob') this.blobBytes -= Number(id.slice(id.lastIndexOf(':') + 1));
  }

  /** Start a round now (or right after the running one). */
  private kick(): void {
    if (this.closed) return;
    if (this.running) {
      this.again = true;
      return;
    }
    clearTimeout(this.timer);
    this.timer = undefined;
    this.running = this.rounds()
      .catch((err: Error) => this.deps.log.error(`upstream queue: ${err.message} (a bug)`))
      .finally(() => {
        this.running = undefined;
        if (this.again && !this.closed) {
          this.again = false;
          this.kick();
        } else if (this.keys.size === 0) this.idle.splice(0).forEach((r) => r());
      });
  }

  private async rounds(): Promise<void> {
    for (;;) {
      this.again = false;
      if (this.closed || !this.deps.conn.usable || this.keys.size === 0) return;
      const now = this.now();
      const due: Array<{ key: string; value: QueueRecord }> = [];
      let nextDue: number | undefined;
      for (const e of this.db.getRange({ limit: ROUND })) {
        const at = Number(e.key.slice(0, 15));
        if (at > now) {
          nextDue = at;
          break;
        }
        if (this.keys.get(e.value.id) === e.key) due.push(e);
      }
      if (due.length === 0) {
        if (nextDue !== undefined) {
          this.timer = setTimeout(() => this.kick(), nextDue - now);
          this.timer.unref();
        }
        return;
      }
      const stop = await this.send(due);
      if (stop) return;
    }
  }

  /** Send one round; true when the upstream went away (stop until it is back). */
  private async send(items: Array<{ key: string; value: QueueRecord }>): Promise<boolean> {
    const blobs = items.filter((i) => i.value.k === 'blob');
    const others = items.filter((i) => i.value.k !== 'blob');
    try {
      if (blobs.length) {
        const lost = await this.uploadClosure(blobs.map((b) => decodeBlobId(b.value.id)));
        for (const b of blobs) {
          if (lost.has(b.value.id.slice(2))) {
            this.failed++;
            this.deps.log.warn(`upstream queue: ${b.value.id.slice(2)} left the local store before it was uploaded`);
          } else this.done++;
          await this.remove(b);
        }
      }
    } catch (err) {
      if (await this.failedRound(blobs, err)) return true;
    }
    for (let i = 0; i < others.length; i += this.deps.concurrency) {
      const results = await Promise.all(
        others.slice(i, i + this.deps.concurrency).map(async (item) => {
          try {
            await (item.value.k === 'ac' ? this.sendActionResult(item.value) : this.sendAsset(item.value));
            this.done++;
            await this.remove(item);
            return false;
          } catch (err) {
            return this.failedRound([item], err);
          }
        }),
      );
      if (results.some((r) => r)) return true;
    }
    return false;
  }

  /** Reschedule failed items; true when the upstream is unreachable (then they stay due). */
  private async failedRound(items: Array<{ key: string; value: QueueRecord }>, err: unknown): Promise<boolean> {
    const message = (err as Error).message;
    this.lastError = message;
    const code = err instanceof UpstreamError ? err.code : undefined;
    if (code === grpc.status.UNAVAILABLE || code === grpc.status.DEADLINE_EXCEEDED || !this.deps.conn.usable) return true;
    for (const item of items) {
      const tries = item.value.tries + 1;
      if (tries >= MAX_TRIES || code === grpc.status.UNIMPLEMENTED) {
        this.failed++;
        this.deps.log.warn(`upstream queue: giving up on ${describe(item.value)} after ${tries} attempt(s): ${message}`);
        await this.remove(item);
        continue;
      }
      const delay = Math.min(this.deps.retry.initialSeconds * 2 ** (tries - 1), this.deps.retry.maxSeconds) * 1000;
      const key = this.keyFor(this.now() + delay, item.value.id);
      const record = { ...item.value, tries };
      this.keys.set(item.value.id, key);
      await this.deps.env.write('rescheduling an upload to the upstream', async () => {
        await this.db.remove(item.key);
        await this.db.put(key, record);
      }).catch(() => undefined);
    }
    this.deps.log.debug(`upstream queue: ${items.length} item(s) failed, retrying later: ${message}`);
    return false;
  }

  private async remove(item: { key: string; value: QueueRecord }): Promise<void> {
    this.forget(item.value.id, item.value);
    await this.deps.env.write('removing an uploaded item from the upstream queue', () => this.db.remove(item.key), { deletion: true }).catch(() => undefined);
  }

  /**
   * Make the upstream hold `digests`: FindMissingBlobs there, then upload what it lacks from
   * the local store (batches for small blobs, ByteStream for large ones). Returns the
   * identities ("fn:hash:size") of blobs the local store no longer has.
   */
  private async uploadClosure(digests: readonly Digest[]): Promise<Set<string>> {
    const { upstream, local, stats } = this.deps;
    const unique = [...new Map(digests.filter((d) => d.sizeBytes > 0).map((d) => [d.key, d])).values()];
    const missing = await upstream.findMissing(unique);
    const lost = new Set<string>();
    const small = missing.filter((d) => d.sizeBytes <= upstream.batchMax);
    const large = missing.filter((d) => d.sizeBytes > upstream.batchMax);
    let batch: Array<{ digest: Digest; data: Uint8Array }> = [];
    let bytes = 0;
    const flush = async (): Promise<void> => {
      await upstream.batchUpload(batch);
      for (const b of batch) {
        stats.blobsUp++;
        stats.bytesUp += b.digest.sizeBytes;
      }
      batch = [];
      bytes = 0;
    };
    for (const d of small) {
      const data = await local.get(d);
      if (!data) {
        lost.add(idOf(d));
        continue;
      }
      if (bytes + data.length > upstream.batchMax) await flush();
      batch.push({ digest: d, data });
      bytes += data.length;
    }
    await flush();
    for (let i = 0; i < large.length; i += this.deps.concurrency) {
      await Promise.all(
        large.slice(i, i + this.deps.concurrency).map(async (d) => {
          const source = await local.read(d, 0, 0);
          if (!source) {
            lost.add(idOf(d));
            return;
          }
          await upstream.streamUpload(d, source);
          stats.blobsUp++;
          stats.bytesUp += d.sizeBytes;
        }),
      );
    }
    return lost;
  }

  /** Everything under Directory roots, read from the local store. */
  private async directoryClosure(roots: readonly Digest[]): Promise<Digest[]> {
    const out: Digest[] = [];
    for (const root of roots) {
      for await (const { digest, directory } of walkDirectories(this.deps.local, root)) {
        out.push(digest, ...directoryReferences(directory, root.fn).files);
      }
    }
    return out;
  }

  private async sendActionResult(r: QueueRecord): Promise<void> {
    const sep = r.id.indexOf('\u0000');
    const instance = InstanceName.parse(r.id.slice(2, sep));
    const action = decodeDigest(r.id.slice(sep + 1));
    const result = await this.deps.localAc.get(instance, action);
    if (!result) return; // gone locally (replaced or evicted): nothing to send
    const refs = actionResultReferences(result, action);
    const wanted = [...refs.blobs, ...(refs.trees ?? [])];
    for (const tree of refs.trees ?? []) {
      const bytes = await this.deps.local.get(tree);
      if (bytes) wanted.push(...treeFileDigests(re.Tree.decode(bytes), tree.fn));
    }
    wanted.push(...refs.directories, ...(await this.directoryClosure(refs.directories)));
    const lost = await this.uploadClosure(wanted);
    if (lost.size) throw new Error(`action result ${action}: blobs it refers to left the local store (${[...lost][0]}...): not pushed`);
    await this.deps.conn.unary('actionCache', 'UpdateActionResult', {
      instanceName: this.deps.conn.instance,
      actionDigest: action.toProto(),
      actionResult: result,
      digestFunction: action.fn.value,
    });
  }

  private async sendAsset(r: QueueRecord): Promise<void> {
    const a = r.asset!;
    const digest = decodeDigest(a.digest);
    const blobs = a.blobs.map(decodeDigest);
    const directories = a.directories.map(decodeDigest);
    const roots = a.kind === 'directory' ? [digest, ...directories] : directories;
    const lost = await this.uploadClosure([...(a.kind === 'blob' ? [digest] : []), ...blobs, ...roots, ...(await this.directoryClosure(roots))]);
    if (lost.size) throw new Error(`asset ${a.uris[0]}: blobs it refers to left the local store: not pushed`);
    const common = {
      instanceName: this.deps.conn.instance,
      uris: a.uris,
      qualifiers: a.qualifiers,
      ...(a.expireAt !== undefined ? { expireAt: { seconds: Math.floor(a.expireAt / 1000), nanos: (a.expireAt % 1000) * 1e6 } } : {}),
      digestFunction: digest.fn.value,
    };
    if (a.kind === 'blob') {
      await this.deps.conn.unary('push', 'PushBlob', { ...common, blobDigest: digest.toProto(), referencesBlobs: blobs.map((d) => d.toProto()), referencesDirectories: directories.map((d) => d.toProto()) });
    } else {
      await this.deps.conn.unary('push', 'PushDirectory', { ...common, rootDirectoryDigest: digest.toProto(), referencesBlobs: blobs.map((d) => d.toProto()), referencesDirectories: directories.map((d) => d.toProto()) });
    }
  }
}

const idOf = (d: Digest): string => `${d.fn.name}:${d.hash}:${d.sizeBytes}`;
const encode = idOf;

function decodeDigest(id: string): Digest {
  const [fnName, hash, size] = id.split(':');
  const fn = digestFunctionFromName(fnName!);
  if (!fn) throw new Error(`upstream queue: unknown digest function in ${id}`);
  return Digest.of(fn, hash!, Number(size));
}

const decodeBlobId = (id: string): Digest => decodeDigest(id.slice(2));

function describe(r: QueueRecord): string {
  if (r.k === 'blob') return `blob ${r.id.slice(2)}`;
  if (r.k === 'ac') return `action result ${r.id.slice(r.id.indexOf('\u0000') + 1)}`;
  return `asset ${r.asset?.uris[0]}`;
}
